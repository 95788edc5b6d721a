//! The model manifest parser on arbitrary bytes: a Manifest or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz/manifest.toml");
    match kidney_screen::model::Manifest::parse(data, path) {
        Ok(m) => {
            let _ = m.positive_index();
        }
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
});
