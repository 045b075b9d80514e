//! The image builds: the Docker build context assembled exactly as Docker
//! would (the tracked files, less `.dockerignore`'s patterns, then the build
//! stage's `COPY`s into its `WORKDIR`) in a temporary directory, and the
//! Dockerfile's own `cargo build` run there. No Docker engine runs in CI, so
//! without this a file the product embeds from outside the context (or a
//! `COPY` that goes missing) would break `docker compose up --build` unseen.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// One `.dockerignore` line: a pattern, and whether it re-includes (`!`).
struct Rule {
    pattern: glob::Pattern,
    include: bool,
}

/// `.dockerignore` as Docker reads it: comments and blank lines skipped,
/// leading `/` and `./` dropped, the last matching line wins, and a line
/// matches a path when it matches the path or one of its parent directories.
fn dockerignore(text: &str) -> Vec<Rule> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (include, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let p = p.trim_start_matches("./").trim_start_matches('/');
            let pattern =
                glob::Pattern::new(p).unwrap_or_else(|e| panic!(".dockerignore: {l:?}: {e}"));
            Rule { pattern, include }
        })
        .collect()
}

fn ignored(rules: &[Rule], path: &str) -> bool {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut prefixes = vec![path];
    prefixes.extend(path.match_indices('/').map(|(i, _)| &path[..i]));
    let mut out = false;
    for r in rules {
        if prefixes.iter().any(|p| r.pattern.matches_with(p, opts)) {
            out = !r.include;
        }
    }
    out
}

/// The files Docker would send: those of a clean clone (git's tracked files),
/// less the ignored ones.
fn context_files(root: &Path) -> Vec<String> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .expect("git must be installed to list the build context");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = dockerignore(&std::fs::read_to_string(root.join(".dockerignore")).unwrap());
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter(|f| !f.is_empty() && root.join(f).is_file() && !ignored(&rules, f))
        .map(str::to_string)
        .collect()
}

/// A `COPY` of the Dockerfile: its sources (in the context) and destination.
#[derive(Debug)]
struct Copy {
    stage: usize,
    sources: Vec<String>,
    dest: String,
}

/// The `COPY` lines (without `--from`, which copy between stages), each with
/// its stage's number, and every stage's `WORKDIR`.
fn copies(dockerfile: &str) -> (Vec<Copy>, Vec<String>) {
    let mut stage = 0;
    let mut workdirs = Vec::new();
    let mut out = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next().map(str::to_ascii_uppercase).as_deref() {
            Some("FROM") => {
                stage = workdirs.len();
                workdirs.push("/".to_string());
            }
            Some("WORKDIR") => workdirs[stage] = words.next().unwrap().to_string(),
            Some("COPY") => {
                let args: Vec<&str> = words.collect();
                if args.iter().any(|a| a.starts_with("--from")) {
                    continue;
                }
                let mut paths: Vec<String> = args
                    .iter()
                    .filter(|a| !a.starts_with("--"))
                    .map(|a| a.to_string())
                    .collect();
                let dest = paths.pop().unwrap();
                out.push(Copy {
                    stage,
                    sources: paths,
                    dest,
                });
            }
            _ => {}
        }
    }
    (out, workdirs)
}

/// The Dockerfile's build command: the `cargo build …` of its `RUN` line.
fn build_command(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let run = joined
        .lines()
        .find(|l| l.trim_start().starts_with("RUN") && l.contains("cargo build"))
        .expect("the Dockerfile builds with `cargo build`");
    let cmd = &run[run.find("cargo build").unwrap()..];
    let cmd = cmd.split("&&").next().unwrap();
    cmd.split_whitespace().map(str::to_string).collect()
}

/// Copies `rel` (a file or a directory of the context) to `dest`, as `COPY` does.
fn copy_from_context(files: &[String], root: &Path, rel: &str, dest: &Path) -> usize {
    let rel = rel.trim_end_matches('/');
    let mut n = 0;
    for f in files {
        let target = if f == rel {
            if dest.to_string_lossy().ends_with('/') || dest.is_dir() {
                dest.join(Path::new(f).file_name().unwrap())
            } else {
                dest.to_path_buf()
            }
        } else if let Some(sub) = f.strip_prefix(&format!("{rel}/")) {
            dest.join(sub)
        } else {
            continue;
        };
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(root.join(f), &target).unwrap();
        // Keep the source's time, so cargo rebuilds only what changed since the last run.
        let modified = std::fs::metadata(root.join(f)).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&target)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        n += 1;
    }
    n
}

#[test]
fn dockerignore_is_read_as_docker_reads_it() {
    let rules = dockerignore("target\n**/target\n*.md\n!probes/README.md\n# c\n/bench\n");
    assert!(ignored(&rules, "target/debug/x"));
    assert!(ignored(&rules, "prober/target/x"));
    assert!(ignored(&rules, "README.md"));
    assert!(!ignored(&rules, "probes/README.md"));
    assert!(
        !ignored(&rules, "prober/README.md"),
        "*.md is the root only"
    );
    assert!(ignored(&rules, "bench/side-by-side.sh"));
    assert!(!ignored(&rules, "prober/src/bench/side.rs"));
}

/// Assembles the context and runs the Dockerfile's `cargo build` in it, with
/// the target directory these tests were built in (cargo holds its lock only
/// while it builds, not while the tests run), so the dependencies built for
/// README.md's `cargo run --release` are reused. The context lives at a fixed
/// place with the sources' times, so a second run rebuilds only what changed.
/// It holds the timing lock for writing: a release build takes both cores.
#[test]
fn the_image_s_build_stage_compiles_from_the_build_context_alone() {
    let _exclusive = crate::helpers::TIMING.blocking_write();
    let root = repo();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let files = context_files(&root);
    let (copies, workdirs) = copies(&dockerfile);
    assert!(workdirs.len() >= 2, "a build stage and a runtime stage");

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let scratch = tmp.join("docker-context");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).unwrap();
    }
    let stage_root = |stage: usize| scratch.join(format!("stage{stage}"));
    for c in &copies {
        let base = stage_root(c.stage).join(workdirs[c.stage].trim_start_matches('/'));
        let dest_path: PathBuf = if c.dest.starts_with('/') {
            stage_root(c.stage).join(c.dest.trim_start_matches('/'))
        } else {
            base.join(&c.dest)
        }
        .components()
        .filter(|p| *p != std::path::Component::CurDir)
        .collect();
        if c.dest.ends_with('/') || c.sources.len() > 1 {
            std::fs::create_dir_all(&dest_path).unwrap();
        }
        for src in &c.sources {
            let n = copy_from_context(&files, &root, src, &dest_path);
            assert!(
                n > 0,
                "Dockerfile: COPY {src} finds nothing in the build context (is it in .dockerignore?)"
            );
        }
    }

    // Directories too (build.rs watches migrations/ by its time), deepest first.
    let mut dirs = Vec::new();
    let mut stack = vec![scratch.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            }
        }
        dirs.push(d);
    }
    let fixed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
    for d in dirs.iter().rev() {
        std::fs::File::open(d).unwrap().set_modified(fixed).unwrap();
    }

    let cmd = build_command(&dockerfile);
    assert_eq!(cmd[..2], ["cargo", "build"]);
    let workdir = stage_root(0).join(workdirs[0].trim_start_matches('/'));
    let target_dir = tmp.parent().unwrap().to_path_buf();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(&cmd[1..])
        .arg("--offline")
        .current_dir(&workdir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_TERM_COLOR", "never")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{}` failed in the assembled build context {}:\n{}",
        cmd.join(" "),
        workdir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
