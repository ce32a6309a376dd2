//! Issue #25: setup-only secrets reach the `--setup` steps and nothing
//! after them; proxy secrets are placeholders in the command's
//! environment; a bundle with setup-only secrets needs a setup step.

use std::fs;
use std::process::Stdio;

use sealinit_core::bundle::Header;
use sealinit_testkit::*;

fn header() -> Header {
    Header::new(sealinit_core::time::now(), None, None).with_repo("acme/api")
}

#[test]
fn setup_secrets_are_the_setup_steps_alone() {
    let setup = random_text(48);
    let env = random_text(48);
    let placeholder = format!("sealinit-placeholder-{}", random_text(32));
    let fx = Fixture::with_deliveries(
        &[
            ("SETUP_TOKEN", setup.as_bytes(), Delivery::Setup),
            ("APP_KEY", env.as_bytes(), Delivery::Env),
            ("STRIPE_KEY", placeholder.as_bytes(), Delivery::Proxy),
        ],
        header(),
    );
    // Halves: a freed chunk's first bytes are the allocator's.
    let needles: Vec<&[u8]> = vec![&setup.as_bytes()[..24], &setup.as_bytes()[24..]];
    for mode in [Mode::Pid1, Mode::Plain] {
        let ready = fx.path("ready");
        let _ = fs::remove_file(&ready);
        // The setup step exits 0 only if it has the values (checked by
        // length and first bytes: the step's text is in sealinit's memory,
        // and must not hold what the scan looks for).
        let step = format!(
            "test ${{#SETUP_TOKEN}} -eq 48 && case \"$SETUP_TOKEN\" in '{}'*) ;; *) exit 1;; esac && test ${{#APP_KEY}} -eq 48 && test -n \"$STRIPE_KEY\"",
            &setup[..8]
        );
        let script = format!(": > {}; exec sleep 1000", ready.display());
        let b = fx.bundle.to_str().unwrap();
        let mut child = sealinit(
            mode,
            Some(&fx.key),
            &[
                "--bundle",
                b,
                "--log-level",
                "trace",
                "--setup",
                &step,
                "sh",
                "-c",
                &script,
            ],
        )
        .stdout(Stdio::null())
        .stderr(fs::File::create(fx.path("log")).unwrap())
        .spawn()
        .unwrap();
        let pid = sealinit_pid(&child, mode);
        wait_for_file(&ready);
        let agent: i32 = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let in_init = needles_in_memory(pid, &needles);
        let in_agent = needles_in_memory(agent, &needles);
        // Control: the agent does hold its env value.
        let control = needles_in_memory(agent, &[&env.as_bytes()[..24]]);
        let environ = fs::read(format!("/proc/{agent}/environ")).unwrap();
        kill(pid, "KILL");
        let _ = child.kill();
        let _ = child.wait();
        let log = fs::read_to_string(fx.path("log")).unwrap();
        assert!(!log.contains(&setup), "{mode:?}: a setup value was logged");
        assert_eq!(control.len(), 1, "{mode:?}: control scan failed");
        assert!(
            in_init.is_empty(),
            "{mode:?}: sealinit still holds the setup value"
        );
        assert!(
            in_agent.is_empty(),
            "{mode:?}: the agent holds the setup value"
        );
        let vars = parse_env0(&environ);
        assert!(
            !vars.contains_key(&b"SETUP_TOKEN"[..]),
            "{mode:?}: {vars:?}"
        );
        assert_eq!(
            vars.get(&b"APP_KEY"[..]).map(Vec::as_slice),
            Some(env.as_bytes())
        );
        assert_eq!(
            vars.get(&b"STRIPE_KEY"[..]).map(Vec::as_slice),
            Some(placeholder.as_bytes())
        );
    }
}

#[test]
fn setup_secrets_without_a_setup_step_are_refused() {
    let fx = Fixture::with_deliveries(
        &[
            ("SETUP_A", b"a", Delivery::Setup),
            ("SETUP_B", b"b", Delivery::Setup),
            ("APP", b"c", Delivery::Env),
        ],
        header(),
    );
    let ran = fx.path("ran");
    let script = format!(": > {}", ran.display());
    let b = fx.bundle.to_str().unwrap();
    let o = run(sealinit(
        Mode::Plain,
        Some(&fx.key),
        &["--bundle", b, "sh", "-c", &script],
    ));
    fails(&o, 65, "SETUP_A, SETUP_B");
    assert!(stderr(&o).contains("--setup"), "{}", stderr(&o));
    assert!(!ran.exists(), "the command ran");
}
