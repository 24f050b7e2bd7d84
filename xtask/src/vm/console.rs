//! Reads the guest's serial console: the markers /init prints and libtest's
//! per-test lines.

use std::time::Duration;

#[derive(Default)]
pub struct Console {
    /// When /init printed `VM-TEST-BOOT:` (host clock since qemu started) and
    /// the guest's uptime at that moment.
    pub boot: Option<(Duration, String)>,
    /// The words of the boot marker after `VM-TEST-BOOT:` (`key=value` …).
    pub boot_line: String,
    /// `VM-TEST-INFO:` lines: facts the guest reports besides the tests.
    pub info: Vec<String>,
    pub result: Option<Outcome>,
    pub setup_error: Option<String>,
    /// The kernel could not unpack the whole initramfs (too little guest
    /// memory): files are missing in the guest.
    pub initramfs_failed: bool,
    /// The test executable currently running.
    current: String,
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// `binary: test` for every test libtest reported as FAILED.
    pub failures: Vec<String>,
    /// `binary rc=N secs=S` for every test executable that finished.
    pub binaries: Vec<String>,
}

pub struct Outcome {
    pub pass: bool,
    pub binaries: Option<usize>,
    pub line: String,
}

impl Console {
    /// The test executable that started last and has not finished.
    pub fn running(&self) -> Option<&str> {
        let done = self.binaries.last().and_then(|b| b.split_whitespace().next());
        (!self.current.is_empty() && done != Some(self.current.as_str())).then_some(self.current.as_str())
    }

    /// `key=value` of the boot marker.
    pub fn boot_field(&self, key: &str) -> Option<&str> {
        self.boot_line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    pub fn line(&mut self, raw: &str, elapsed: Duration) {
        let line = strip_ansi(raw);
        let line = line.trim_end();
        if line.contains("Initramfs unpacking failed") {
            self.initramfs_failed = true;
        }
        if let Some(rest) = line.strip_prefix("VM-TEST-BOOT:") {
            let uptime = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("uptime="))
                .unwrap_or("?")
                .to_string();
            self.boot = Some((elapsed, uptime));
            self.boot_line = rest.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("VM-TEST-INFO:") {
            self.info.push(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("VM-TEST-SETUP-ERROR:") {
            self.setup_error = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("==== VM-TEST-RUN [") {
            // "==== VM-TEST-RUN [i/n] NAME ===="
            self.current = rest
                .split_once("] ")
                .map(|(_, n)| n.trim_end_matches(" ====").to_string())
                .unwrap_or_default();
        } else if let Some(rest) = line.strip_prefix("VM-TEST-BINARY:") {
            self.binaries.push(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("VM-TEST-RESULT:") {
            let rest = rest.trim();
            let binaries = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("binaries="))
                .and_then(|n| n.parse().ok());
            self.result = Some(Outcome {
                pass: rest.split_whitespace().next() == Some("PASS"),
                binaries,
                line: line.to_string(),
            });
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            // "test result: ok. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (w.next(), w.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some(name) = rest.strip_suffix(" ... FAILED")
        {
            self.failures.push(format!("{}: {name}", short(&self.current)));
        }
    }
}

/// `integration-0123abcd…` → `integration`: cargo's hash suffix dropped.
pub fn short(exe: &str) -> &str {
    match exe.rsplit_once('-') {
        Some((base, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => base,
        _ => exe,
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI sequences (colours, "ESC [ 2 J") up to their final letter;
            // other escapes ("ESC c", from the firmware) are two characters.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_markers_and_libtest_lines() {
        let mut c = Console::default();
        let t = Duration::from_secs(4);
        for l in [
            "\x1bc\x1b[?7l\x1b[2JVM-TEST-BOOT: kernel=6.1.0 uptime=3.18 cpus=2\r",
            "==== VM-TEST-RUN [1/2] run-0123456789abcdef ====\r",
            "test a ... ok",
            "test b::poll ... \x1b[31mFAILED\x1b[0m",
            "test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.0s",
        ] {
            c.line(l, t);
        }
        assert_eq!(c.running(), Some("run-0123456789abcdef"));
        c.line("VM-TEST-BINARY: run-0123456789abcdef rc=101 secs=1.0", t);
        c.line("VM-TEST-RESULT: FAIL binaries=2 failed=1 failed_binaries=run", t);
        assert_eq!(c.boot.as_ref().map(|b| b.1.as_str()), Some("3.18"));
        assert_eq!(c.boot_field("kernel"), Some("6.1.0"));
        assert_eq!(c.boot_field("cpu"), None);
        c.line("VM-TEST-INFO: Overall exposure level for x.service: 5.2 MEDIUM", t);
        assert_eq!(c.info, ["Overall exposure level for x.service: 5.2 MEDIUM"]);
        assert_eq!((c.passed, c.failed, c.ignored), (1, 1, 2));
        assert_eq!(c.failures, ["run: b::poll"]);
        assert_eq!(c.running(), None);
        let r = c.result.unwrap();
        assert!(!r.pass);
        assert_eq!(r.binaries, Some(2));
    }

    #[test]
    fn short_drops_only_cargo_hashes() {
        assert_eq!(short("watch-685051ef523d275b"), "watch");
        assert_eq!(short("my-test"), "my-test");
        assert_eq!(short("exec"), "exec");
    }
}
