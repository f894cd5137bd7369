//! `liveroom`: the command-line tool of liveroom. `liveroom new my-app` creates a new app: a Rust
//! server crate depending on liveroom (one room with data, presence, cursors, a guard and an
//! action, a sign-in hook, a test over real sockets) and a Svelte 5 + Vite + TypeScript page
//! (the `/ws` proxy, code generated from the server's manifest, a strict type check).
//!
//! ```text
//! cargo run -p liveroom-cli -- new my-app      # from a liveroom checkout
//! cd my-app && cargo run                       # the server
//! cd my-app/web && npm install && npm run dev  # the page
//! ```

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "liveroom", version, about = "The liveroom command-line tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new app in DIR (its last path segment names the crate).
    New {
        /// Where to create the app; must not exist or be empty.
        dir: PathBuf,
        /// Depend on the liveroom crates and the JS client of this checkout (the default when
        /// this tool runs from a checkout).
        #[arg(long, conflicts_with = "registry")]
        liveroom_path: Option<PathBuf>,
        /// Depend on the published crates and npm package instead of a checkout.
        #[arg(long)]
        registry: bool,
    },
}

/// The files of a new app: where they go, and their text with `{{placeholders}}`.
const TEMPLATE: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../template/Cargo.toml.tmpl")),
    ("README.md", include_str!("../template/README.md.tmpl")),
    (".gitignore", include_str!("../template/gitignore.tmpl")),
    ("src/lib.rs", include_str!("../template/src/lib.rs.tmpl")),
    ("src/main.rs", include_str!("../template/src/main.rs.tmpl")),
    (
        "tests/app.rs",
        include_str!("../template/tests/app.rs.tmpl"),
    ),
    (
        "web/package.json",
        include_str!("../template/web/package.json.tmpl"),
    ),
    (
        "web/vite.config.ts",
        include_str!("../template/web/vite.config.ts.tmpl"),
    ),
    (
        "web/tsconfig.json",
        include_str!("../template/web/tsconfig.json.tmpl"),
    ),
    (
        "web/index.html",
        include_str!("../template/web/index.html.tmpl"),
    ),
    (
        "web/src/main.ts",
        include_str!("../template/web/src/main.ts.tmpl"),
    ),
    (
        "web/src/App.svelte",
        include_str!("../template/web/src/App.svelte.tmpl"),
    ),
    (
        "web/src/Board.svelte",
        include_str!("../template/web/src/Board.svelte.tmpl"),
    ),
];

/// The version the `--registry` dependencies ask for.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the app's liveroom dependencies come from.
enum Source {
    /// A checkout of the liveroom repository.
    Checkout(PathBuf),
    /// crates.io and npm.
    Registry,
}

impl Source {
    fn values(&self) -> [(&'static str, String); 3] {
        match self {
            Source::Checkout(root) => {
                let path = |p: &str| root.join(p).display().to_string();
                [
                    (
                        "liveroom",
                        format!("{{ path = {:?} }}", path("crates/liveroom")),
                    ),
                    (
                        "liveroom_client",
                        format!("{{ path = {:?} }}", path("crates/liveroom-client")),
                    ),
                    ("liveroom_js", format!("file:{}", path("clients/js"))),
                ]
            }
            Source::Registry => [
                ("liveroom", format!("\"{VERSION}\"")),
                ("liveroom_client", format!("\"{VERSION}\"")),
                ("liveroom_js", format!("^{VERSION}")),
            ],
        }
    }
}

/// The checkout this binary was built from, if it is still there.
fn own_checkout() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().ok()?;
    root.join("crates/liveroom/Cargo.toml")
        .is_file()
        .then_some(root)
}

/// The crate name for an app directory: its last segment, which must be a valid package name.
fn crate_name(dir: &Path) -> Result<String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the app directory needs a name")?;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!("`{name}` is not a valid app name: lowercase letters, digits, - and _, starting with a letter");
    }
    Ok(name.to_owned())
}

/// Fills `{{key}}` placeholders.
fn fill(text: &str, values: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// Creates the app in `dir` and returns the files written.
fn create(dir: &Path, source: &Source) -> Result<Vec<PathBuf>> {
    let name = crate_name(dir)?;
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let mut values = vec![("name", name.clone()), ("crate", name.replace('-', "_"))];
    values.extend(source.values());
    let mut written = Vec::new();
    for (path, text) in TEMPLATE {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().expect("a file in a directory"))?;
        std::fs::write(&target, fill(text, &values))
            .with_context(|| format!("writing {}", target.display()))?;
        written.push(target);
    }
    if let Source::Checkout(root) = source {
        // The versions this checkout is tested with: the app builds against the same ones.
        let lock = root.join("Cargo.lock");
        if lock.is_file() {
            std::fs::copy(&lock, dir.join("Cargo.lock"))?;
        }
    }
    Ok(written)
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::New {
            dir,
            liveroom_path,
            registry,
        } => {
            let source = match (liveroom_path, registry) {
                (Some(path), _) => Source::Checkout(
                    path.canonicalize()
                        .with_context(|| format!("no liveroom checkout at {}", path.display()))?,
                ),
                (None, true) => Source::Registry,
                (None, false) => own_checkout().map_or(Source::Registry, Source::Checkout),
            };
            create(&dir, &source)?;
            let shown = dir.display();
            println!("created {shown}\n");
            println!("  cd {shown} && cargo run                        # the server, on http://127.0.0.1:3000");
            println!("  cd {shown}/web && npm install && npm run dev   # the page, on http://localhost:5173\n");
            println!("then open http://localhost:5173 in two browsers.");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_from_the_checkout() {
        let dir = std::env::temp_dir().join(format!("liveroom-cli-test-{}", std::process::id()));
        let app = dir.join("my-app");
        let root = own_checkout().expect("tests run in a checkout");
        let files = create(&app, &Source::Checkout(root.clone())).unwrap();
        assert_eq!(files.len(), TEMPLATE.len());
        let cargo = std::fs::read_to_string(app.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"my-app\""), "{cargo}");
        let liveroom = format!(
            "liveroom = {{ path = {:?} }}",
            root.join("crates/liveroom").display().to_string()
        );
        assert!(cargo.contains(&liveroom), "{cargo}");
        let main = std::fs::read_to_string(app.join("src/main.rs")).unwrap();
        assert!(main.contains("my_app::app()"), "{main}");
        let pkg = std::fs::read_to_string(app.join("web/package.json")).unwrap();
        assert!(
            pkg.contains(&format!("\"liveroom\": \"file:{}", root.display())),
            "{pkg}"
        );
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(
                !text.contains("{{"),
                "{} keeps a placeholder",
                file.display()
            );
        }
        assert!(app.join("Cargo.lock").is_file());
        // Never over an existing app.
        assert!(create(&app, &Source::Registry).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn app_names() {
        assert_eq!(crate_name(Path::new("/tmp/my-app")).unwrap(), "my-app");
        assert!(crate_name(Path::new("My App")).is_err());
        assert!(crate_name(Path::new("1app")).is_err());
    }

    #[test]
    fn registry_versions() {
        let values = Source::Registry.values();
        assert_eq!(values[0].1, format!("\"{VERSION}\""));
        assert_eq!(values[2].1, format!("^{VERSION}"));
    }
}
