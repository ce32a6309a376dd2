//! Any bytes as sealctl input (dotenv or JSON, chosen by the first byte):
//! parsing and validation must fail cleanly, and an error message never
//! repeats the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealinit::{bundle, import};

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let parsed = if which % 2 == 0 {
        import::parse_env(input)
    } else {
        import::parse_json(input)
    };
    match parsed {
        Ok(entries) => {
            let _ = bundle::validate_entries(&entries);
            let _ = bundle::check_name_policy(&entries, &[]);
        }
        Err(message) => {
            // A long distinctive input must not come back in the message.
            if input.len() >= 24 && !input.iter().all(|b| b.is_ascii_alphanumeric() || *b == b' ') {
                let text = String::from_utf8_lossy(input);
                if let Some(probe) = text.lines().find(|l| l.len() >= 24 && !l.contains("NAME")) {
                    assert!(!message.contains(probe), "error echoes input: {message}");
                }
            }
        }
    }
});
