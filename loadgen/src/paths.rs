//! Paths in results: a report names binaries, data directories and command lines relative to
//! the repository, never as absolute paths of the machine that made it.
//!
//! The rules, first match wins: under `$CARGO_TARGET_DIR` → `$CARGO_TARGET_DIR/…`; under the
//! repository → relative (`target/release/…`); the value of `--data-dir` → `$DATA_DIR`; under
//! the temp dir → `$TMPDIR/…`; under `$HOME` → `~/…`; system locations (`/usr`, `/bin`, `/lib`,
//! `/etc`, `/opt`, `/proc`, `/dev`) stay as they are; any other absolute path keeps only its
//! file name (`…/name`). Runs on the main task at start-up; pure string work after that.

use std::path::{Path, PathBuf};

/// Prefixes that name the same thing on every Linux machine.
const SYSTEM_PREFIXES: [&str; 8] = [
    "/usr/", "/bin/", "/sbin/", "/lib", "/etc/", "/opt/", "/proc/", "/dev/",
];

#[derive(Clone, Debug, Default)]
pub struct Scrub {
    pub repo: Option<PathBuf>,
    pub target_dir: Option<PathBuf>,
    pub tmp: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

fn under(path: &Path, base: &Option<PathBuf>) -> Option<String> {
    let rest = path.strip_prefix(base.as_ref()?).ok()?;
    Some(rest.display().to_string())
}

impl Scrub {
    /// The repository is the git work tree of the current directory.
    pub fn from_env() -> Scrub {
        let dir = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        Scrub {
            repo: crate::report::command_output("git", &["rev-parse", "--show-toplevel"])
                .map(PathBuf::from),
            target_dir: dir("CARGO_TARGET_DIR"),
            tmp: Some(std::env::temp_dir()),
            home: dir("HOME"),
        }
    }

    /// One path (or a word that may be one) under the rules above.
    pub fn path(&self, word: &str) -> String {
        if !word.starts_with('/') {
            return word.to_owned();
        }
        let p = Path::new(word);
        let join = |prefix: &str, rest: String| {
            if rest.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}/{rest}")
            }
        };
        if let Some(rest) = under(p, &self.target_dir) {
            return join("$CARGO_TARGET_DIR", rest);
        }
        if let Some(rest) = under(p, &self.repo) {
            return if rest.is_empty() { ".".into() } else { rest };
        }
        if let Some(rest) = under(p, &self.tmp) {
            return join("$TMPDIR", rest);
        }
        if let Some(rest) = under(p, &self.home) {
            return join("~", rest);
        }
        if SYSTEM_PREFIXES.iter().any(|s| word.starts_with(s)) {
            return word.to_owned();
        }
        match p.file_name() {
            Some(name) => format!("…/{}", name.to_string_lossy()),
            None => "…".into(),
        }
    }

    /// A command line's arguments: each path rewritten, `--data-dir`'s value as `$DATA_DIR`,
    /// `--opt=/path` forms included.
    pub fn args(&self, args: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(args.len());
        let mut data_dir_next = false;
        for a in args {
            if data_dir_next {
                out.push("$DATA_DIR".to_owned());
                data_dir_next = false;
                continue;
            }
            if a == "--data-dir" {
                data_dir_next = true;
                out.push(a.clone());
            } else if a.starts_with("--data-dir=") {
                out.push("--data-dir=$DATA_DIR".to_owned());
            } else if let Some((opt, value)) = a.split_once('=').filter(|(o, _)| o.starts_with('-'))
            {
                out.push(format!("{opt}={}", self.path(value)));
            } else {
                out.push(self.path(a));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub() -> Scrub {
        Scrub {
            repo: Some("/home/u/src/lah".into()),
            target_dir: Some("/var/cache/tgt".into()),
            tmp: Some("/var/tmp".into()),
            home: Some("/home/u".into()),
        }
    }

    #[test]
    fn paths_lose_the_machine() {
        let s = scrub();
        assert_eq!(
            s.path("/home/u/src/lah/target/release/x"),
            "target/release/x"
        );
        assert_eq!(s.path("/home/u/src/lah"), ".");
        assert_eq!(
            s.path("/var/cache/tgt/release/x"),
            "$CARGO_TARGET_DIR/release/x"
        );
        assert_eq!(s.path("/var/tmp/tmp.abc/data"), "$TMPDIR/tmp.abc/data");
        assert_eq!(
            s.path("/home/u/.pyenv/shims/python3"),
            "~/.pyenv/shims/python3"
        );
        assert_eq!(s.path("/usr/bin/python3"), "/usr/bin/python3");
        assert_eq!(s.path("/srv/builds/lah-server"), "…/lah-server");
        assert_eq!(s.path("relative/x"), "relative/x");
    }

    #[test]
    fn command_lines() {
        let s = scrub();
        let args: Vec<String> = [
            "/home/u/src/lah/target/release/lambda-at-home-server",
            "--data-dir",
            "/srv/scratch/d1",
            "--runtime-deps-dir=/home/u/src/lah/runtimes/.deps",
            "--data-dir=/x",
            "--executor",
            "process",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            s.args(&args),
            [
                "target/release/lambda-at-home-server",
                "--data-dir",
                "$DATA_DIR",
                "--runtime-deps-dir=runtimes/.deps",
                "--data-dir=$DATA_DIR",
                "--executor",
                "process"
            ]
        );
    }
}
