//! The `sealinit` binary: parse the command line, run the library, map the
//! outcome to an exit code.
#![cfg_attr(not(test), no_main)]

mod args;

use std::ffi::c_int;

use args::Parsed;

/// The C entry point. `no_main` keeps std's start-up code from setting
/// SIGPIPE to SIG_IGN, which every command would otherwise inherit. The
/// arguments are taken from `argc`/`argv` here: std's own list is empty
/// under `no_main` on musl (glibc fills it through `.init_array`, musl does
/// not). Unit tests use the normal harness instead.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const std::ffi::c_char) -> c_int {
    // SAFETY: `argc` and `argv` are what the C runtime passes to `main`:
    // `argc` valid NUL-terminated strings that live for the whole process.
    let args = unsafe { sealinit_sys::args_from_main(argc, argv) };
    let code = run(args);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code
}

#[cfg_attr(test, allow(dead_code))]
fn run(args: Vec<std::ffi::OsString>) -> c_int {
    let parsed = args::parse(args.into_iter().skip(1), |k| std::env::var_os(k));
    match parsed {
        Ok(Parsed::Help) => {
            print!("{}", args::HELP);
            0
        }
        Ok(Parsed::Version) => {
            println!("sealinit {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Err(msg) => {
            eprintln!("sealinit: {msg}\n{}", args::USAGE);
            sealinit::error::exit::USAGE.into()
        }
        Ok(Parsed::Run(opts, level)) => {
            sealinit::logging::init("sealinit", level);
            match sealinit::launch::run(&opts) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("sealinit: {}", sealinit::error::one_line(&e.to_string()));
                    e.exit_code().into()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sealinit::error::one_line;

    #[test]
    fn errors_are_one_line_without_control_characters() {
        assert_eq!(one_line("a\nb\x1b[2Jc\r"), "a\\nb\\u{1b}[2Jc\\r");
        assert_eq!(one_line("plain é"), "plain é");
    }
}
