//! The crate's layers, checked: a module may import from its own layer and the ones below it,
//! never from one above, and no two modules import each other, directly or round a loop.
//!
//! Bottom up:
//! 0. **data**: what the whole crate speaks (calls, arguments, scopes, ids, requests, rules,
//!    codes, audit entries, errors, times and text);
//! 1. **plugins**: the traits a user implements and their shipped implementations (policies,
//!    notifiers, stores);
//! 2. **engine**: the gate;
//! 3. **middleware**: the tower service and layer on the gate;
//! 4. **adapters**: the HTTP and MCP middleware, the approval web app, configuration, and the store
//!    conformance suite (which drives real gates);
//! 5. **binary**: the `tollgate` command, which sees the crate only through its public API.
//!
//! The check reads the source's `crate::…` paths outside comments, which is every way one module
//! names another here. Inside a module, the files it is split into name each other with
//! `super::…`; those must not form a cycle either (a directory's `mod.rs` is their parent).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Each module and its layer; a submodule listed on its own overrides its parent's layer.
const LAYERS: &[(&str, usize)] = &[
    ("args", 0),
    ("audit", 0),
    ("boxed", 0),
    ("by_id", 0),
    ("meters", 0),
    ("call", 0),
    ("code", 0),
    ("error", 0),
    ("hex", 0),
    ("id", 0),
    ("request", 0),
    ("rule", 0),
    ("scope", 0),
    ("text", 0),
    ("time", 0),
    ("policy", 1),
    ("notify", 1),
    ("store", 1),
    ("gate", 2),
    ("future", 3),
    ("layer", 3),
    ("pending", 3),
    ("service", 3),
    ("approval", 4),
    ("config", 4),
    ("http", 4),
    ("mcp", 4),
    ("store::conformance", 4),
    ("bin", 5),
];

const NAMES: [&str; 6] = [
    "data",
    "plugins",
    "engine",
    "middleware",
    "adapters",
    "binary",
];

/// The module a file belongs to: its top-level module (`gate` for `gate/registry.rs`), or a
/// submodule that has a layer of its own (`store::conformance`).
fn module_of(file: &Path, src: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.truncate(2);
    let path = parts.join("::");
    match layer_of(&path) {
        Some((name, _)) => name.to_owned(),
        None => path,
    }
}

/// The layer of a module: its own entry, else its top-level module's.
fn layer_of(module: &str) -> Option<(&'static str, usize)> {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .or_else(|| LAYERS.iter().find(|(name, _)| *name == top))
        .copied()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("src is readable").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every path a file's code names after `prefix` (`crate::` or `super::`), outside comments,
/// as its segments: `crate::gate::{Gate, Waiter}` gives `[gate, Gate]` and `[gate, Waiter]`,
/// `crate::{args, call::Call}` gives `[args]` and `[call, Call]`.
fn paths_after<'a>(source: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut paths = Vec::new();
    for line in source.lines() {
        let mut rest = line.split("//").next().unwrap_or("");
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            let listed: Vec<&str> = match rest.strip_prefix('{') {
                Some(list) => list.split('}').next().unwrap_or("").split(',').collect(),
                None => vec![rest],
            };
            for item in listed {
                let path = item
                    .trim()
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .filter(|p| !p.is_empty())
                    .collect();
                paths.push(path);
            }
        }
    }
    paths
}

/// Every `crate::a` or `crate::a::b` a file's code names, as the module it resolves to.
fn imports(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for path in paths_after(source, "crate::") {
        // Only module paths count: the root's re-exports are not imported from here.
        let Some(top) = path.first().filter(|t| t.starts_with(char::is_lowercase)) else {
            continue;
        };
        let sub = path.get(1).filter(|s| {
            s.starts_with(char::is_lowercase)
                && layer_of(&format!("{top}::{s}")).is_some_and(|(n, _)| n.contains(':'))
        });
        found.insert(match sub {
            Some(sub) => format!("{top}::{sub}"),
            None => (*top).to_owned(),
        });
    }
    found
}

/// Module → the modules it imports, for every file under `src` but the root and this check.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&file, &src);
        if module == "lib" || module == "layers" {
            continue;
        }
        let source = fs::read_to_string(&file).expect("source is readable");
        let mut used = imports(&source);
        used.retain(|m| m != &module && !module.starts_with(&format!("{m}::")));
        graph.entry(module).or_default().extend(used);
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: Vec<String> = graph()
        .into_keys()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS: {unplaced:?}"
    );
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let mut upward = Vec::new();
    for (module, used) in graph() {
        let Some((_, own)) = layer_of(&module) else {
            continue;
        };
        for import in used {
            if let Some((_, theirs)) = layer_of(&import)
                && theirs > own
            {
                upward.push(format!(
                    "{module} ({}) imports {import} ({})",
                    NAMES[own], NAMES[theirs]
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a layer above:\n{}",
        upward.join("\n")
    );
}

/// A cycle in `graph`, if there is one, as the modules round it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Depth-first, with the path so far: a module met again on its own path closes a cycle.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            let mut cycle: Vec<String> = path[at..].iter().map(|m| (*m).to_owned()).collect();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_import_each_other_in_no_cycle() {
    if let Some(cycle) = find_cycle(&graph()) {
        panic!("an import cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_check_reads_imports_as_written() {
    let source = "use crate::gate::{Gate, Waiter};\nuse crate::{args, call::Call};\n\
                  // crate::http is a comment\n    crate::store::conformance::run();";
    let found: Vec<String> = imports(source).into_iter().collect();
    assert_eq!(found, ["args", "call", "gate", "store::conformance"]);
}

/// The files of one directory module, each with the sibling files it names (`super::name`); the
/// directory's `mod.rs` is their parent, not a sibling.
fn siblings(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("src is readable").path();
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        match name {
            Some(name)
                if name != "mod"
                    && (path.is_dir() || path.extension().is_some_and(|e| e == "rs")) =>
            {
                names.insert(name);
            }
            _ => {}
        }
    }
    let mut graph = BTreeMap::new();
    for name in &names {
        let file = dir.join(format!("{name}.rs"));
        let file = if file.exists() {
            file
        } else {
            dir.join(name).join("mod.rs")
        };
        let source = fs::read_to_string(&file).expect("source is readable");
        let used = paths_after(&source, "super::")
            .into_iter()
            .filter_map(|path| path.first().copied())
            .filter(|first| first != name && names.contains(*first))
            .map(str::to_owned)
            .collect();
        graph.insert(name.clone(), used);
    }
    graph
}

#[test]
fn files_of_one_module_import_each_other_in_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut dirs = vec![src];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("src is readable").path();
            if path.is_dir() {
                dirs.push(path);
            }
        }
        if dir.join("mod.rs").exists() {
            let graph = siblings(&dir);
            if let Some(cycle) = find_cycle(&graph) {
                panic!(
                    "{}: the files {} import each other",
                    dir.display(),
                    cycle.join(" → ")
                );
            }
        }
    }
}
