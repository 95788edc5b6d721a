//! Every shipped board profile loads and validates, finds its model, and agrees with the
//! systemd unit it is installed with (deploy/kidney-screen.service).

use std::path::{Path, PathBuf};

use kidney_screen::config::{Config, GpioBackend};

/// Where deploy/install.sh puts the tarball's contents (bin/, models/, boards/, ...).
const PREFIX: &str = "/opt/kidney-screen";

/// Profiles for the ARM boards, each installed by `deploy/install.sh --board NAME`.
const ARM_BOARDS: [&str; 6] = ["rpi4", "rpi5", "rpi3-aarch64", "rpi3-armv7", "pi-zero-2w", "rk3588"];

fn profiles() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(crate::root().join("boards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
}

fn load(path: &Path) -> Config {
    Config::load(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

fn board(name: &str) -> PathBuf {
    crate::root().join("boards").join(format!("{name}.toml"))
}

#[test]
fn every_board_profile_validates() {
    let paths = profiles();
    for path in &paths {
        load(path);
    }
    assert!(paths.len() >= 9, "only {} profiles", paths.len());
}

/// The model directory each profile names exists and holds a manifest and its model file:
/// installed paths (/opt/kidney-screen/models/...) map onto the tarball's layout, which is
/// the source tree's; relative ones resolve as the binary resolves them.
#[test]
fn every_profile_model_dir_resolves() {
    for path in profiles() {
        let config = load(&path);
        let dir = match config.model_dir.strip_prefix(PREFIX) {
            Ok(rel) => crate::root().join(rel),
            Err(_) => {
                assert!(config.model_dir.is_relative(), "{}: model dir outside {PREFIX}", path.display());
                kidney_screen::setup::resolve_model_dir(&config.model_dir)
            }
        };
        let manifest = kidney_screen::model::Manifest::load(&dir)
            .unwrap_or_else(|e| panic!("{}: [model] dir {}: {e:#}", path.display(), config.model_dir.display()));
        assert!(dir.join(&manifest.file).is_file(), "{}: no {} in {}", path.display(), manifest.file, dir.display());
    }
}

#[test]
fn every_arm_profile_has_three_distinct_led_lines() {
    for name in ARM_BOARDS {
        let path = board(name);
        let config = load(&path);
        assert_eq!(config.board, name, "{}", path.display());
        let gpio = config.gpio.unwrap_or_else(|| panic!("{name}: no [indicator.gpio]"));
        let lines = gpio.named_lines();
        for (i, (key, line)) in lines.iter().enumerate() {
            for (other, other_line) in &lines[i + 1..] {
                assert_ne!(line, other_line, "{name}: {key} and {other} are both line {line}");
            }
        }
        match (&gpio.backend, name) {
            // rppal is Raspberry-Pi-only; the RK3588 goes through the character device.
            (GpioBackend::Cdev { chip }, "rk3588") => assert!(chip.starts_with("/dev"), "{name}: {}", chip.display()),
            (GpioBackend::Rppal, n) if n != "rk3588" => {
                // Not on the SPI0 lines the display examples use (MISO, MOSI, SCLK, CE0, CE1).
                for (key, line) in lines {
                    assert!(![7, 8, 9, 10, 11].contains(&line), "{name}: {key} = {line} is an SPI0 line");
                }
            }
            (backend, _) => panic!("{name}: unexpected GPIO backend {backend:?}"),
        }
        assert!(matches!(config.source, kidney_screen::config::SourceConfig::V4l2 { .. }), "{name}: not V4L2");
    }
}

/// The `[display]` examples left commented out in the profiles validate once uncommented, LED
/// pin clashes included.
#[test]
fn commented_display_examples_validate() {
    let mut checked = 0;
    for path in profiles() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.trim_end() == "# [display]") {
            let block: Vec<&str> = lines[i..]
                .iter()
                .take_while(|l| l.starts_with('#'))
                .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
                .collect();
            let uncommented = format!("{text}\n{}\n", block.join("\n"));
            Config::parse(&uncommented)
                .unwrap_or_else(|e| panic!("{}: the commented [display] example: {e:#}", path.display()))
                .display
                .unwrap_or_else(|| panic!("{}: the example did not make a display", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= ARM_BOARDS.len(), "only {checked} display examples");
}

fn unit() -> String {
    std::fs::read_to_string(crate::root().join("deploy/kidney-screen.service")).unwrap()
}

fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).collect()
}

/// What the installed profiles need is what the unit grants: the binary and config where
/// install.sh puts them, and the audit log in the one writable directory.
#[test]
fn installed_profiles_fit_the_systemd_unit() {
    let unit = unit();
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec, [format!("{PREFIX}/bin/kidney-screen run --config /etc/kidney-screen/board.toml")]);
    assert_eq!(unit_values(&unit, "StateDirectory"), ["kidney-screen/audit"]);
    assert_eq!(unit_values(&unit, "ReadWritePaths"), ["/var/lib/kidney-screen/audit"]);
    for (key, value) in [
        ("Type", "notify"),
        ("WatchdogSec", "15"),
        ("Restart", "always"),
        ("User", "kidney-screen"),
        ("ProtectSystem", "strict"),
        ("PrivateNetwork", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(unit_values(&unit, key), [value], "{key}");
    }
    let mut installable: Vec<&str> = ARM_BOARDS.to_vec();
    installable.push("x86-dev");
    for name in installable {
        let config = load(&board(name));
        assert_eq!(
            config.audit_dir.as_deref(),
            Some(Path::new("/var/lib/kidney-screen/audit")),
            "{name}: [audit] dir must be the unit's writable directory"
        );
        assert!(config.audit_sync, "{name}: audit records must be synced");
    }
    let install = std::fs::read_to_string(crate::root().join("deploy/install.sh")).unwrap();
    assert!(install.contains(&format!("prefix={PREFIX}\n")), "install.sh installs elsewhere");
}

/// What the unit's Type=notify and WatchdogSec= rely on: `run` under a notify socket (as
/// systemd starts it) sends READY=1, then WATCHDOG=1 pings and STATUS= lines from the frame
/// loop, and STOPPING=1 at the end.
#[test]
fn run_speaks_the_systemd_notify_protocol() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let server = UnixDatagram::bind(&socket).unwrap();
    server.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let profile = dir.path().join("board.toml");
    std::fs::write(&profile, "[capture]\nsource = \"simulated\"\nseed = 3\n[indicator]\nconsole = false\n").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kidney-screen"))
        .args(["run", "--frames", "40", "--config"])
        .arg(&profile)
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "100000") // a ping every 50 ms
        .env_remove("WATCHDOG_PID")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match server.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) if child.try_wait().unwrap().is_some() => break,
            Err(_) => {}
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(messages.first().map(String::as_str), Some("READY=1"), "{messages:?}");
    assert_eq!(messages.last().map(String::as_str), Some("STOPPING=1"), "{messages:?}");
    assert!(messages.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2, "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("STATUS=shown: ")), "{messages:?}");
}
