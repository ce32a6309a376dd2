//! Any bytes as sealctl input (dotenv or JSON, chosen by the first byte):
//! parsing and validation must fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealctl::import;
use sealinit_core::bundle;

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let parsed = match which % 3 {
        0 => import::parse_env(input, false),
        1 => import::parse_env(input, true),
        _ => import::parse_json(input),
    };
    // Whether an error echoes a value is checked by the CLI tests with
    // known secrets: here any input may spell out our own message text, so
    // only clean failure is asserted.
    if let Ok(entries) = parsed {
        let _ = bundle::validate_entries(&entries);
        let _ = bundle::check_name_policy(&entries, &[]);
    }
});
