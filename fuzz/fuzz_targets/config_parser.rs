//! The board profile parser on arbitrary text: a Config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = kidney_screen::config::Config::parse(text) {
            // Errors are formatted for the log and the CLI: that must not panic either.
            let _ = format!("{e:#}");
        }
    }
});
