//! Runs an integration guide (`docs/integrations/*.md`) the way an operator follows it.
//!
//! A guide's fenced blocks marked ```` ```sh ```` are its commands; every other block
//! (configuration shown for reading, sample output) is left alone. [`Guide::run`] joins the
//! `sh` blocks, in order, into one bash script under `set -euo pipefail` (one shell, as an
//! operator types them), each command on the line it has in the guide, runs it bounded in
//! time with the guide's variables in the environment, and fails the test with the
//! script's output if it fails (ending with `GUIDE:LINE: COMMAND: failed`) and the
//! `*.log` files the guide wrote in `$WORK` (its daemons' logs). The test supplies
//! only the variables the guide declares (`: "${NAME:=default}"` or `: "${NAME:?…}"`),
//! always `WORK`, a fresh folder for the guide's files.
//!
//! A guide starts its long-running daemons in the background and writes each one's pid
//! into a `*.pid` file directly in `$WORK`; dropping the [`Guide`] stops every one of
//! them (TERM, then KILL), whether the guide passed or not, and then the script's
//! process group.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::run;

/// How long a guide's commands may take altogether.
pub const GUIDE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a daemon may take to stop after TERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The `sh` blocks of a markdown text, in order, each with the line its fence opens on
/// (counted from 1; the block's text starts on the next line).
/// A fence may be indented (inside a list item); its indentation is removed from the
/// block's lines.
pub fn sh_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    // (fence, indentation, runnable, first line, body) of the block being read.
    let mut open: Option<(String, usize, bool, usize, String)> = None;
    for (number, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
                if ticks >= 3 {
                    let info = trimmed[ticks..].trim();
                    let runnable = info.split_whitespace().next() == Some("sh");
                    open = Some((
                        trimmed[..ticks].to_owned(),
                        indent,
                        runnable,
                        number + 1,
                        String::new(),
                    ));
                }
            }
            Some((fence, fence_indent, runnable, first, body)) => {
                if trimmed.trim_end() == fence.as_str() {
                    if *runnable {
                        blocks.push((*first, std::mem::take(body)));
                    }
                    open = None;
                } else {
                    let cut = indent.min(*fence_indent);
                    body.push_str(&line[cut..]);
                    body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    blocks
}

/// A guide that ran: its folder and output; its daemons stop when it is dropped.
pub struct Guide {
    /// `$WORK`.
    pub work: PathBuf,
    /// What the commands printed (standard output and error), secrets masked.
    pub output: String,
    _dir: tempfile::TempDir,
    script_group: Option<u32>,
}

impl Guide {
    /// `docs/integrations/NAME`.
    pub fn path(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/integrations")
            .join(name)
    }

    /// Runs the `sh` blocks of the guide at `path` with `vars` (each one the guide must
    /// declare) and `env` (the module's own variables) set, plus `WORK`. Fails the test,
    /// after stopping the guide's daemons, if the script fails or overruns
    /// [`GUIDE_TIMEOUT`]; `diagnostics` is added to the failure (the module's log, say).
    /// Every value in `secrets` is masked in the output shown.
    pub fn run(
        path: &Path,
        vars: &[(&str, OsString)],
        env: &[(&str, OsString)],
        secrets: &[&str],
        diagnostics: impl Fn() -> String,
    ) -> Self {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let markdown =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (var, _) in vars {
            assert!(
                markdown.contains(&format!("${{{var}:="))
                    || markdown.contains(&format!("${{{var}:?")),
                "{name} does not declare {var}"
            );
        }
        // Each command sits on the script line of its line in the guide, so that bash's
        // line numbers are the guide's.
        let mut script = format!(
            "set -euo pipefail; trap 'echo \"{name}:$LINENO: $BASH_COMMAND: failed\" >&2' ERR\n"
        );
        let mut lines = 1;
        for (fence, block) in sh_blocks(&markdown) {
            while lines < fence {
                script.push('\n');
                lines += 1;
            }
            script.push_str(&block);
            lines += block.lines().count();
        }
        // A folder the guide's unprivileged server workers may read, like /srv would be;
        // nothing secret lives in it but files the guide makes root-only itself.
        let dir = tempfile::tempdir().unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let work = dir.path().to_owned();
        let script_path = work.join(".guide.sh");
        std::fs::write(&script_path, script).unwrap();
        let mut all: Vec<(&str, OsString)> = vec![("WORK", work.clone().into())];
        all.extend(vars.iter().cloned());
        all.extend(env.iter().cloned());
        let mut guide = Self {
            work,
            output: String::new(),
            _dir: dir,
            script_group: None,
        };
        let started = Instant::now();
        let (status, output, group) = run_script(&script_path, &all);
        guide.script_group = Some(group);
        let mask = |text: String| {
            secrets
                .iter()
                .filter(|s| !s.is_empty())
                .fold(text, |text, s| text.replace(s, "***"))
        };
        guide.output = mask(output);
        let failure = match status {
            None => format!("overran {GUIDE_TIMEOUT:?}"),
            Some(status) if !status.success() => format!("failed ({status})"),
            Some(_) => {
                eprintln!("{name}: {:.1} s", started.elapsed().as_secs_f64());
                return guide;
            }
        };
        guide.stop();
        panic!(
            "{name} {failure}; output:\n{}\n{}\n{}",
            guide.output,
            mask(guide.logs()),
            diagnostics()
        );
    }

    /// The `*.log` files in `$WORK` (the daemons' logs), each with its name.
    fn logs(&self) -> String {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.work)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.retain(|p| p.extension().is_some_and(|x| x == "log"));
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                format!(
                    "{}:\n{text}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A file in `$WORK`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// The pid a guide wrote into `$WORK/NAME`.
    pub fn pid(&self, name: &str) -> u32 {
        let text = std::fs::read_to_string(self.file(name)).unwrap_or_default();
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} holds no pid: {text:?}\n{}", self.output))
    }

    /// Stops every daemon named by a `*.pid` file in `$WORK`, then the script's group.
    fn stop(&mut self) {
        let pids: Vec<u32> = std::fs::read_dir(&self.work)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter_map(|text| text.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for &pid in &pids {
            signal("-TERM", &pid.to_string());
        }
        let start = Instant::now();
        while pids.iter().any(|&p| alive(p)) && start.elapsed() < STOP_TIMEOUT {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &pid in pids.iter().filter(|&&p| alive(p)) {
            signal("-KILL", &pid.to_string());
        }
        if let Some(group) = self.script_group.take() {
            signal("-KILL", &format!("-{group}"));
        }
    }
}

impl Drop for Guide {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `bash SCRIPT` in a process group of its own; returns its status (`None` on
/// overrun), its output and the group.
fn run_script(
    script: &Path,
    env: &[(&str, OsString)],
) -> (Option<std::process::ExitStatus>, String, u32) {
    let out_path = script.with_extension("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut command = Command::new("bash");
    command
        .arg(script)
        .current_dir(script.parent().unwrap())
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        // The caller's ssh-agent must not stand in for the one a guide starts.
        .env_remove("SSH_AUTH_SOCK")
        .envs(env.iter().map(|(k, v)| (k, v)));
    use std::os::unix::process::CommandExt;
    let mut child = command.process_group(0).spawn().unwrap();
    let group = child.id();
    let status = super::wait_or_kill_group(&mut child, GUIDE_TIMEOUT);
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    (status, output, group)
}

fn signal(signal: &str, target: &str) {
    let _ = run(
        "kill",
        &[signal.into(), "--".into(), target.into()],
        &[],
        Duration::from_secs(5),
    );
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The processes whose parent is `pid`, with their real user ids.
pub fn children_uids(pid: u32) -> Vec<(u32, u32)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u32>().ok())
        };
        if field("PPid:") == Some(pid)
            && let Some(uid) = field("Uid:")
        {
            children.push((child, uid));
        }
    }
    children
}
