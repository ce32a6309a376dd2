//! Signal names and numbers, as accepted on the command line: `SIGUSR1`,
//! `USR1` and `10` all name the same signal; `RTMIN+3`, `SIGRTMAX-1` name
//! real-time signals.

use std::ffi::c_int;

use sealinit_sys as sys;

const NAMES: [(&str, c_int); 30] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
];

/// Parses a signal name or number.
pub fn parse(s: &str) -> Result<c_int, String> {
    let bad = || {
        format!(
            "{s:?} is not a signal: use a name (TERM, SIGUSR1, RTMIN+2) or a number (1-{})",
            sys::sigrtmax()
        )
    };
    if let Ok(n) = s.parse::<c_int>() {
        return if (1..=sys::sigrtmax()).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        return Ok(n);
    }
    let rt = |base: c_int, rest: &str| -> Option<c_int> {
        let n = match rest.as_bytes().first() {
            None => base,
            Some(b'+') => base + rest[1..].parse::<c_int>().ok()?,
            Some(b'-') => base - rest[1..].parse::<c_int>().ok()?,
            _ => return None,
        };
        (sys::sigrtmin()..=sys::sigrtmax())
            .contains(&n)
            .then_some(n)
    };
    let parsed = if let Some(rest) = name.strip_prefix("RTMIN") {
        rt(sys::sigrtmin(), rest)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        rt(sys::sigrtmax(), rest)
    } else {
        None
    };
    parsed.ok_or_else(bad)
}

/// A short name for logs: `SIGTERM`, `SIGRTMIN+3`, or the number.
pub fn name(sig: c_int) -> String {
    if let Some((n, _)) = NAMES.iter().find(|(_, v)| *v == sig) {
        return format!("SIG{n}");
    }
    if (sys::sigrtmin()..=sys::sigrtmax()).contains(&sig) {
        return format!("SIGRTMIN+{}", sig - sys::sigrtmin());
    }
    sig.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_prefixes_agree() {
        for s in ["SIGUSR1", "USR1", "usr1", "10", "SigUsr1"] {
            assert_eq!(parse(s), Ok(libc::SIGUSR1), "{s}");
        }
        assert_eq!(parse("RTMIN"), Ok(libc::SIGRTMIN()));
        assert_eq!(parse("SIGRTMIN+3"), Ok(libc::SIGRTMIN() + 3));
        assert_eq!(parse("RTMAX-1"), Ok(libc::SIGRTMAX() - 1));
        for bad in ["", "0", "65", "NOPE", "RTMIN+99", "RTMINX", "-1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
    }
}
