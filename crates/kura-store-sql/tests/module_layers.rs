//! The crate's modules form layers, checked from the source: a module that implements a storage
//! capability (`impl ...Store for SqlStore`) is a feature module; every other module is a bottom
//! module (shared transaction pieces, row mappers, the access paths). Bottom modules never import
//! a feature module, feature modules never import each other, and no module imports one that
//! imports it back, directly or around a longer loop.
//!
//! Imports are read from the text: `crate::name` (also inside `crate::{..}` groups) and
//! `super::name` naming a module of the crate, and in `lib.rs` the paths `name::..` that start
//! with one of its modules. Any other `crate::` path names an item of `lib.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The crate's source files as module name (`lib` for the crate root) and text.
fn sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().and_then(|s| s.to_str()).expect("file name").to_owned();
            files.push((name, std::fs::read_to_string(&path).expect("source is readable")));
        }
    }
    files.sort();
    files
}

/// The text without comments (a `//` outside a string literal ends the line's code).
fn without_comments(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut in_string = false;
        let mut previous = ' ';
        let mut end = line.len();
        for (i, c) in line.char_indices() {
            if c == '"' && previous != '\\' {
                in_string = !in_string;
            }
            if !in_string && c == '/' && previous == '/' {
                end = i - 1;
                break;
            }
            previous = c;
        }
        out.push_str(&line[..end]);
        out.push('\n');
    }
    out
}

fn identifier_at(text: &str) -> &str {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// The items of a `{..}` group that starts at `text[0]`, split at its top-level commas.
fn group_items(text: &str) -> Vec<&str> {
    let mut depth = 0;
    let mut items = Vec::new();
    let mut start = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    items.push(&text[start..i]);
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.into_iter().map(str::trim).filter(|item| !item.is_empty()).collect()
}

/// The modules `text` (the source of module `name`) imports.
fn imports(name: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = without_comments(text);
    let mut found = BTreeSet::new();
    let mut note = |first: &str| {
        if modules.contains(first) {
            found.insert(first.to_owned());
        } else {
            found.insert("lib".to_owned());
        }
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if rest.starts_with('{') {
            for item in group_items(rest) {
                note(identifier_at(item));
            }
        } else {
            note(identifier_at(rest));
        }
    }
    for (at, _) in code.match_indices("super::") {
        let first = identifier_at(&code[at + "super::".len()..]);
        if modules.contains(first) {
            found.insert(first.to_owned());
        }
    }
    if name == "lib" {
        for module in modules {
            let path = format!("{module}::");
            let starts_a_path = code.match_indices(&path).any(|(at, _)| {
                let before = code[..at].chars().next_back().unwrap_or(' ');
                !(before.is_alphanumeric() || before == '_' || before == ':')
            });
            if starts_a_path {
                found.insert(module.clone());
            }
        }
    }
    found.remove(name);
    found
}

fn import_graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeSet<String> = files.iter().map(|(name, _)| name.clone()).filter(|n| n != "lib").collect();
    files.iter().map(|(name, text)| (name.clone(), imports(name, text, &modules))).collect()
}

fn is_feature(text: &str) -> bool {
    let code = without_comments(text);
    code.match_indices("impl ").any(|(at, _)| {
        let head = code[at..].split('{').next().unwrap_or("");
        let mut words = head.split_whitespace().skip(1);
        let (Some(trait_path), Some("for"), Some("SqlStore")) = (words.next(), words.next(), words.next()) else {
            return false;
        };
        trait_path.rsplit("::").next().is_some_and(|t| t.ends_with("Store"))
    })
}

/// A loop in the graph, as the modules along it (the first repeated at the end), if any.
fn find_loop(graph: &Graph) -> Option<Vec<String>> {
    fn visit(node: &str, graph: &Graph, done: &mut BTreeSet<String>, path: &mut Vec<String>) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// What breaks the layering: loops, bottom modules importing features, features importing
/// features.
fn layering_faults(files: &[(String, String)]) -> Vec<String> {
    let graph = import_graph(files);
    let features: BTreeSet<&str> =
        files.iter().filter(|(_, text)| is_feature(text)).map(|(name, _)| name.as_str()).collect();
    let mut faults = Vec::new();
    if let Some(cycle) = find_loop(&graph) {
        faults.push(format!("import loop: {}", cycle.join(" -> ")));
    }
    for (module, imported) in &graph {
        for target in imported.iter().filter(|t| features.contains(t.as_str())) {
            let layer = if features.contains(module.as_str()) { "feature" } else { "bottom" };
            faults.push(format!("{layer} module {module} imports feature module {target}"));
        }
    }
    faults
}

#[test]
fn modules_form_layers_without_loops() {
    let files = sources();
    let faults = layering_faults(&files);
    assert!(faults.is_empty(), "the module layers are broken:\n{}", faults.join("\n"));
}

#[test]
fn the_scan_sees_the_crate_as_it_is() {
    // Guards against a scan that finds nothing and so passes whatever the code does.
    let files = sources();
    let graph = import_graph(&files);
    let features: BTreeSet<&str> =
        files.iter().filter(|(_, text)| is_feature(text)).map(|(name, _)| name.as_str()).collect();
    for feature in ["accounts", "records", "grants", "audit", "research", "disclosure", "peers"] {
        assert!(features.contains(feature), "{feature}.rs should implement a capability");
    }
    for bottom in ["lib", "access", "audit_chain", "record_rows", "rows", "writes"] {
        assert!(!features.contains(bottom), "{bottom}.rs should implement no capability");
    }
    assert!(graph["records"].contains("record_rows"));
    assert!(graph["records"].contains("lib"));
    assert!(graph["lib"].contains("direct"));
    assert!(graph["access"].contains("cache"));
}

fn check(files: &[(&str, &str)], expected: &[&str]) {
    let files: Vec<(String, String)> = files.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
    assert_eq!(layering_faults(&files), expected);
}

#[test]
fn the_check_finds_what_breaks_the_layers() {
    let lib = "mod a;\nmod b;\nmod c;\npub struct SqlStore;\n";
    let feature = "use crate::{SqlStore, a::piece};\nimpl kura_store::AStore for SqlStore {}\n";
    // Layered: a feature over bottom modules.
    check(&[("lib", lib), ("a", "use crate::b::x;"), ("b", "// crate::a is only mentioned\n"), ("f", feature)], &[]);
    // A loop between bottom modules, through a group and an inline path.
    check(
        &[
            ("lib", lib),
            ("a", "use crate::{b::x, SqlStore};"),
            ("b", "fn f() { crate::c::g() }"),
            ("c", "use super::a;"),
            ("f", feature),
        ],
        &["import loop: a -> b -> c -> a"],
    );
    // A bottom module reaching up into a feature, and a feature into another.
    let other_feature = "use crate::f::helper;\nimpl BStore for SqlStore {}\n";
    check(
        &[("lib", lib), ("a", "use crate::f::helper;"), ("f", feature), ("g", other_feature)],
        &[
            "import loop: a -> f -> a",
            "bottom module a imports feature module f",
            "feature module g imports feature module f",
        ],
    );
}
