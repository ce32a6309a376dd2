//! The `sealinit` binary: parse the command line, run the library, map the
//! outcome to an exit code.
#![cfg_attr(not(test), no_main)]

mod args;

use std::ffi::c_int;

use args::Parsed;

/// The C entry point. `no_main` keeps std's start-up code from setting
/// SIGPIPE to SIG_IGN, which every command would otherwise inherit; std's
/// argument and environment access still works (glibc hands them to std
/// through `.init_array`). Unit tests use the normal harness instead.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const std::ffi::c_char) -> c_int {
    let code = run();
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> c_int {
    let parsed = args::parse(std::env::args_os().skip(1), |k| std::env::var_os(k));
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
                    eprintln!("sealinit: {e}");
                    e.exit_code().into()
                }
            }
        }
    }
}
