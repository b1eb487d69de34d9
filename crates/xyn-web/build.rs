//! Embeds htmx, its SSE extension and the CodeMirror 5 editor (the draft editor; MIT licence,
//! prebuilt browser files, no bundler) from their published npm packages (never copied into the
//! repository). They are installed into `ui/node_modules` by `npm ci` from `ui/package-lock.json`;
//! when they are missing, this script runs `npm ci` itself (npm must be on PATH; without the
//! browser tests' dev packages unless they were there).

use std::path::{Path, PathBuf};
use std::process::Command;

const FILES: &[(&str, &str)] = &[
    ("htmx.org/dist/htmx.min.js", "htmx.min.js"),
    ("htmx-ext-sse/dist/sse.min.js", "sse.min.js"),
    ("codemirror/lib/codemirror.js", "codemirror.js"),
    ("codemirror/lib/codemirror.css", "codemirror.css"),
    ("codemirror/mode/yaml/yaml.js", "codemirror-yaml.js"),
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ui = manifest.join("ui");
    let modules = ui.join("node_modules");
    println!("cargo:rerun-if-changed=ui/package-lock.json");
    println!("cargo:rerun-if-changed=ui/package.json");
    for (src, _) in FILES {
        println!("cargo:rerun-if-changed=ui/node_modules/{src}");
    }
    if FILES.iter().any(|(src, _)| !modules.join(src).is_file()) {
        install(&ui);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (src, dst) in FILES {
        let from = modules.join(src);
        if let Err(e) = std::fs::copy(&from, out.join(dst)) {
            panic!(
                "cannot read {} ({e}).\nThe Xyn UI embeds htmx and CodeMirror from npm: run `npm ci --prefix {}` (needs Node.js and npm), then build again.",
                from.display(),
                ui.display()
            );
        }
    }
}

fn install(ui: &Path) {
    // `npm ci` starts from an empty node_modules: where the browser tests' packages (dev
    // dependencies) are installed, install them again rather than remove them.
    let dev = ui.join("node_modules/playwright-core").is_dir();
    let mut args = vec!["ci", "--no-audit", "--no-fund", "--loglevel=error"];
    if !dev {
        args.push("--omit=dev");
    }
    let status = Command::new("npm").args(&args).current_dir(ui).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm ci` in {} failed ({s}). The Xyn UI embeds htmx and CodeMirror from their npm packages.",
            ui.display()
        ),
        Err(e) => panic!(
            "cannot run npm ({e}). The Xyn UI embeds htmx and CodeMirror from their npm packages: install Node.js and npm, or run `npm ci --prefix {}` on a machine that has them.",
            ui.display()
        ),
    }
}
