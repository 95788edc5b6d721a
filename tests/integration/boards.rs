//! Every shipped board profile loads and validates.

use kidney_screen::config::Config;

#[test]
fn every_board_profile_validates() {
    let dir = crate::root().join("boards");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} profiles");
}
