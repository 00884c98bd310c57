//! Embeds the browser chat page (`web/` at the workspace root) in
//! `missive-server`: writes `$OUT_DIR/web_page.rs`, the table `FILES` of
//! (URL path, `include_bytes!` of the file), which the server hands to its
//! WebSocket listener. Left out: `web/e2e/` (the browser tests),
//! `web/node_modules/`, `web/package.json`, `web/package-lock.json`, and
//! every dotfile. A missing or empty `web/` gives an empty table.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// What is not served at the top of `web/`.
const NOT_SERVED: [&str; 4] = ["e2e", "node_modules", "package.json", "package-lock.json"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let web = manifest.join("../../web");
    let mut files = Vec::new();
    if web.is_dir() {
        collect(&web, "", &mut files);
    } else {
        // Until it exists (then `collect` watches it).
        println!("cargo:rerun-if-changed={}", web.display());
    }
    files.sort();
    let mut table = String::from(
        "/// The chat page's files: (URL path, contents), from `web/` at build time.\n\
         pub const FILES: &[(&str, &[u8])] = &[\n",
    );
    for (url, path) in &files {
        writeln!(
            table,
            "    ({url:?}, include_bytes!({:?})),",
            path.display()
        )
        .expect("writing to a String");
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    fs::write(out.join("web_page.rs"), table).expect("cannot write web_page.rs");
}

/// Adds the files served under `dir` (URL path `prefix`) to `files`, with
/// their absolute paths.
fn collect(dir: &Path, prefix: &str, files: &mut Vec<(String, PathBuf)>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            println!(
                "cargo:warning=not served (a name that is not UTF-8): {}",
                path.display()
            );
            continue;
        };
        if name.starts_with('.') || (prefix.is_empty() && NOT_SERVED.contains(&name.as_str())) {
            continue;
        }
        let url = format!("{prefix}/{name}");
        let path = fs::canonicalize(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if path.is_dir() {
            collect(&path, &url, files);
        } else if !url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-~".contains(&b))
        {
            // Requests are matched without percent-decoding.
            println!("cargo:warning=not served (a name a URL would have to escape): {url}");
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push((url, path));
        }
    }
}
