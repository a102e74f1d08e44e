//! `cargo xtask layers`: the library's imports go one way, down the layers of
//! docs/architecture.md ("Layers"), and no files import each other in a circle.
//!
//! Read from the source: every `crate::`, `super::` and `self::` path (in `use` trees, in code
//! and in serde's `with = "..."` strings) is resolved to the file that defines the item,
//! following `pub use` re-exports, so `crate::Error` counts as an import of `error/`. Test code
//! (`#[cfg(test)] mod ...`) is left out: tests may reach anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
};

use crate::Result;

/// The layers, bottom first: a module may import its own layer's modules listed before it
/// and anything in a lower layer, nothing above.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("leaf types and codecs", &["types", "codec", "elf"]),
    ("errors", &["error"]),
    ("raw kernel interfaces", &["kernel", "fault", "phases"]),
    ("declarations", &["insns", "selectors", "options"]),
    ("object pipeline", &["pipeline"]),
    ("loader", &["loader"]),
    ("probes: hooks and attach families", &["probe"]),
    ("maps and readers", &["maps"]),
    ("manager", &["manager"]),
    (
        "surfaces",
        &[
            "inspect",
            "declare",
            "diagnostics",
            "features",
            "testing",
            "fuzzing",
        ],
    ),
];

pub fn run(args: &[String]) -> Result<()> {
    let verbose = args.iter().any(|a| a == "--print");
    let src = std::env::var_os("LAYERS_SRC")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::root().join("crates/ebpf-manager/src"));
    let graph = Graph::read(&src)?;
    if verbose {
        print!("{}", graph.picture());
    }
    let problems = graph.check(LAYERS);
    if problems.is_empty() {
        println!(
            "layers: {} files, {} imports between modules, all one way",
            graph.files.len(),
            graph.module_edges().len()
        );
        Ok(())
    } else {
        Err(format!(
            "{} import(s) against the layers of docs/architecture.md:\n  {}",
            problems.len(),
            problems.join("\n  ")
        ))
    }
}

/// Files by module path (`""` is lib.rs, `manager/init`), and what each imports.
pub struct Graph {
    pub files: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn read(src: &Path) -> Result<Graph> {
        let mut sources = BTreeMap::new();
        read_dir(src, src, &mut sources)?;
        Ok(Graph::from_sources(&sources))
    }

    /// `sources`: module path -> text.
    pub fn from_sources(sources: &BTreeMap<String, String>) -> Graph {
        let parsed: BTreeMap<String, Parsed> = sources
            .iter()
            .map(|(m, text)| (m.clone(), parse(m, text)))
            .collect();
        // Files reached only through `#[cfg(test)] mod x;` are tests.
        let tests: BTreeSet<String> = parsed
            .iter()
            .flat_map(|(m, p)| p.test_children.iter().map(move |c| join(m, c)))
            .collect();
        let modules: BTreeSet<String> = parsed.keys().cloned().collect();
        let resolver = Resolver {
            modules: &modules,
            parsed: &parsed,
        };
        let mut files = BTreeMap::new();
        for (m, p) in &parsed {
            if tests
                .iter()
                .any(|t| m == t || m.starts_with(&format!("{t}/")))
            {
                continue;
            }
            let deps: BTreeSet<String> = p
                .paths
                .iter()
                .filter_map(|(scope, path)| resolver.resolve(scope, path, 0))
                .filter(|d| d != m)
                .collect();
            files.insert(m.clone(), deps);
        }
        Graph { files }
    }

    /// Top-level module -> the other top-level modules it imports.
    pub fn module_edges(&self) -> BTreeSet<(String, String)> {
        self.files
            .iter()
            .flat_map(|(m, deps)| deps.iter().map(move |d| (top(m), top(d))))
            .filter(|(a, b)| a != b && !a.is_empty() && !b.is_empty())
            .collect()
    }

    /// Each import that goes up (or sideways to a later module of the same layer), and each
    /// circle of files (a child's import of its ancestor excepted: that is how modules are
    /// declared).
    pub fn check(&self, layers: &[(&str, &[&str])]) -> Vec<String> {
        let rank = |m: &str| -> Option<usize> {
            layers
                .iter()
                .flat_map(|(_, ms)| ms.iter())
                .position(|x| *x == m)
        };
        let mut problems = Vec::new();
        for (m, deps) in &self.files {
            if m.is_empty() {
                continue;
            }
            let Some(from) = rank(&top(m)) else {
                problems.push(format!(
                    "{m}: module `{}` is in no layer (add it to LAYERS)",
                    top(m)
                ));
                continue;
            };
            for d in deps {
                if d.is_empty() {
                    problems.push(format!(
                        "{m} imports the crate root: name the module instead"
                    ));
                    continue;
                }
                if top(d) == top(m) {
                    continue;
                }
                match rank(&top(d)) {
                    Some(to) if to < from => {}
                    _ => problems.push(format!("{m} imports {d}, which is above it")),
                }
            }
        }
        for circle in self.circles() {
            problems.push(format!("import circle: {}", circle.join(" -> ")));
        }
        problems
    }

    fn circles(&self) -> Vec<Vec<String>> {
        let edges = |m: &str| -> Vec<String> {
            self.files
                .get(m)
                .into_iter()
                .flatten()
                .filter(|d| !is_ancestor(d, m))
                .cloned()
                .collect()
        };
        // Depth-first search; a grey node reached again closes a circle.
        let mut colour: BTreeMap<String, u8> = BTreeMap::new();
        let mut found = Vec::new();
        fn visit(
            m: &str,
            edges: &dyn Fn(&str) -> Vec<String>,
            colour: &mut BTreeMap<String, u8>,
            stack: &mut Vec<String>,
            found: &mut Vec<Vec<String>>,
        ) {
            colour.insert(m.to_owned(), 1);
            stack.push(m.to_owned());
            for d in edges(m) {
                match colour.get(&d).copied().unwrap_or(0) {
                    0 => visit(&d, edges, colour, stack, found),
                    1 => {
                        let at = stack.iter().position(|s| *s == d).unwrap_or(0);
                        let mut circle = stack[at..].to_vec();
                        circle.push(d.clone());
                        found.push(circle);
                    }
                    _ => {}
                }
            }
            stack.pop();
            colour.insert(m.to_owned(), 2);
        }
        for m in self.files.keys() {
            if !colour.contains_key(m) {
                visit(m, &edges, &mut colour, &mut Vec::new(), &mut found);
            }
        }
        found
    }

    /// Which module imports which, layer by layer.
    pub fn picture(&self) -> String {
        let edges = self.module_edges();
        let mut out = String::new();
        for (name, modules) in LAYERS.iter().rev() {
            let _ = writeln!(out, "{name}:");
            for m in *modules {
                let to: Vec<&str> = edges
                    .iter()
                    .filter(|(a, _)| a == m)
                    .map(|(_, b)| b.as_str())
                    .collect();
                let _ = writeln!(out, "  {m:<12} -> {}", to.join(", "));
            }
        }
        out
    }
}

fn read_dir(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            read_dir(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .with_extension("");
            let rel = rel.to_string_lossy().into_owned();
            let module = match rel.as_str() {
                "lib" => String::new(),
                r => r.strip_suffix("/mod").unwrap_or(r).to_owned(),
            };
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            out.insert(module, text);
        }
    }
    Ok(())
}

fn top(m: &str) -> String {
    m.split('/').next().unwrap_or("").to_owned()
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}/{child}")
    }
}

fn is_ancestor(a: &str, of: &str) -> bool {
    a.is_empty() || of.starts_with(&format!("{a}/"))
}

/// What one file says: its paths (each with the inline module it is written in, as segments
/// under the file's module), its re-exports and its test-only child modules.
#[derive(Default)]
struct Parsed {
    paths: Vec<(Vec<String>, Vec<String>)>,
    /// name -> (scope, path) of `pub use` items.
    reexports: BTreeMap<String, (Vec<String>, Vec<String>)>,
    test_children: Vec<String>,
}

fn parse(module: &str, text: &str) -> Parsed {
    let text = strip_comments(text);
    let chars: Vec<char> = text.chars().collect();
    let file_scope: Vec<String> = module
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let mut parsed = Parsed::default();
    // Inline modules: (name, the brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_test = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == '}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if text_at(&chars, i, "#[cfg(test)]") {
            pending_test = true;
            i += "#[cfg(test)]".len();
            continue;
        }
        if !is_ident_start(c) || (i > 0 && is_ident(chars[i - 1])) {
            i += 1;
            continue;
        }
        let (word, end) = ident(&chars, i);
        let scope = || {
            let mut s = file_scope.clone();
            s.extend(inline.iter().map(|(n, _)| n.clone()));
            s
        };
        match word.as_str() {
            "mod" => {
                let (name, after) = ident(&chars, skip_ws(&chars, end));
                let next = skip_ws(&chars, after);
                match chars.get(next) {
                    Some(';') if pending_test => parsed.test_children.push(name),
                    Some('{') if pending_test => {
                        i = skip_block(&chars, next);
                        pending_test = false;
                        continue;
                    }
                    Some('{') => {
                        inline.push((name, depth + 1));
                    }
                    _ => {}
                }
                pending_test = false;
                i = next;
            }
            "use" => {
                let public = is_pub_before(&chars, i);
                let stmt_end = chars[end..]
                    .iter()
                    .position(|&c| c == ';')
                    .map_or(chars.len(), |p| end + p);
                let tree: String = chars[end..stmt_end]
                    .iter()
                    .collect::<String>()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let opens = tree.matches('{').count();
                if tree.contains(['"', '(', '=']) || opens != tree.matches('}').count() {
                    // `use` in a string or a sentence, not a use declaration.
                    i = end;
                    continue;
                }
                for (path, alias) in expand(&tree) {
                    if path.is_empty() || path.last().is_some_and(|s| s == "*") {
                        let path: Vec<String> = path.into_iter().filter(|s| s != "*").collect();
                        if !path.is_empty() {
                            parsed.paths.push((scope(), path));
                        }
                        continue;
                    }
                    if public {
                        let name =
                            alias.unwrap_or_else(|| path.last().cloned().unwrap_or_default());
                        parsed.reexports.insert(name, (scope(), path.clone()));
                    }
                    parsed.paths.push((scope(), path));
                }
                pending_test = false;
                i = stmt_end;
            }
            "crate" | "super" | "self" if text_at(&chars, end, "::") => {
                let mut path = vec![word];
                let mut at = end;
                while text_at(&chars, at, "::")
                    && chars.get(at + 2).is_some_and(|&c| is_ident_start(c))
                {
                    let (seg, next) = ident(&chars, at + 2);
                    path.push(seg);
                    at = next;
                }
                parsed.paths.push((scope(), path));
                i = at;
            }
            _ => {
                if !matches!(word.as_str(), "pub" | "fn" | "struct" | "enum" | "impl") {
                    // An attribute's item follows; `#[cfg(test)]` applies to the next item.
                } else if word != "pub" {
                    pending_test = false;
                }
                i = end;
            }
        }
    }
    parsed
}

/// `a::{b, c::{d as e}}` -> [(a::b, None), (a::c::d, Some(e))]; `self` inside braces names
/// the prefix itself.
fn expand(tree: &str) -> Vec<(Vec<String>, Option<String>)> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let (path, alias) = match tree.split_once(" as ") {
            Some((p, a)) => (p, Some(a.trim().to_owned())),
            None => (tree, None),
        };
        let segs: Vec<String> = path
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        return vec![(segs, alias)];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut level, mut start) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => level += 1,
            '}' => level -= 1,
            ',' if level == 0 => {
                parts.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    let mut out = Vec::new();
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        for (mut path, alias) in expand(part) {
            if path.first().is_some_and(|s| s == "self") {
                path.remove(0);
            }
            let mut full = expand(prefix.trim().trim_end_matches("::")).remove(0).0;
            full.extend(path);
            out.push((full, alias));
        }
    }
    out
}

struct Resolver<'a> {
    modules: &'a BTreeSet<String>,
    parsed: &'a BTreeMap<String, Parsed>,
}

impl Resolver<'_> {
    /// The file that defines what `path`, written in `scope`, names.
    fn resolve(&self, scope: &[String], path: &[String], hops: usize) -> Option<String> {
        let (mut at, rest): (Vec<String>, &[String]) = match path.first()?.as_str() {
            "crate" => (vec![], &path[1..]),
            "self" => (scope.to_vec(), &path[1..]),
            "super" => {
                let mut at = scope.to_vec();
                let mut k = 0;
                while path.get(k).is_some_and(|s| s == "super") {
                    at.pop();
                    k += 1;
                }
                (at, &path[k..])
            }
            // A child module of the scope (2018 paths), else an external crate.
            first => {
                let child = [scope, &[first.to_owned()]].concat().join("/");
                if !self.modules.contains(&child) {
                    return None;
                }
                (scope.to_vec(), path)
            }
        };
        // The deepest file module the path walks through (inline modules stay in their file).
        let mut file = self.file_of(&at);
        let mut k = 0;
        while k < rest.len() {
            at.push(rest[k].clone());
            let name = at.join("/");
            if self.modules.contains(&name) {
                file = name;
                k += 1;
            } else {
                at.pop();
                break;
            }
        }
        let rest = &rest[k..];
        if let (Some(first), true) = (rest.first(), hops < 8) {
            if let Some((s, target)) = self.parsed.get(&file).and_then(|p| p.reexports.get(first)) {
                let mut target = target.clone();
                target.extend(rest[1..].iter().cloned());
                if let Some(found) = self.resolve(s, &target, hops + 1) {
                    return Some(found);
                }
            }
        }
        Some(file)
    }

    fn file_of(&self, scope: &[String]) -> String {
        let mut s = scope.to_vec();
        while !s.is_empty() && !self.modules.contains(&s.join("/")) {
            s.pop();
        }
        s.join("/")
    }
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        // Good enough for this code base: `//` does not occur inside its string literals
        // except in URLs of doc comments, which are comments anyway.
        let code = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn ident(chars: &[char], at: usize) -> (String, usize) {
    let mut end = at;
    while end < chars.len() && is_ident(chars[end]) {
        end += 1;
    }
    (chars[at..end].iter().collect(), end)
}

fn skip_ws(chars: &[char], mut at: usize) -> usize {
    while at < chars.len() && chars[at].is_whitespace() {
        at += 1;
    }
    at
}

fn text_at(chars: &[char], at: usize, s: &str) -> bool {
    s.chars()
        .enumerate()
        .all(|(k, c)| chars.get(at + k) == Some(&c))
}

fn skip_block(chars: &[char], open: usize) -> usize {
    let mut level = 0;
    for (k, &c) in chars.iter().enumerate().skip(open) {
        match c {
            '{' => level += 1,
            '}' => {
                level -= 1;
                if level == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    chars.len()
}

/// Whether the `use` at `at` is `pub`, `pub(crate)` or `pub(super)`.
fn is_pub_before(chars: &[char], at: usize) -> bool {
    let before: String = chars[at.saturating_sub(16)..at].iter().collect();
    let before = before.trim_end();
    before.ends_with("pub") || before.ends_with("pub(crate)") || before.ends_with("pub(super)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        Graph::from_sources(
            &files
                .iter()
                .map(|(m, t)| (m.to_string(), t.to_string()))
                .collect(),
        )
    }

    const LAYERS: &[(&str, &[&str])] = &[("low", &["types", "error"]), ("high", &["manager"])];

    #[test]
    fn re_exports_are_followed_to_the_defining_file() {
        let g = graph(&[
            ("", "mod types; mod error; mod manager;\npub use error::Error;\npub use types::Id;"),
            ("types", "pub struct Id;"),
            ("error", "use crate::Id;\npub enum Error { A(Id) }"),
            ("manager", "use crate::{Error, types::{self, Id as PairId}};\nfn f() -> crate::Error { todo!() }"),
            ("manager/inner", "use super::super::error::Error;\n#[cfg(test)]\nmod tests { use crate::nothing; }"),
        ]);
        assert_eq!(g.files["error"], BTreeSet::from(["types".to_owned()]));
        assert_eq!(
            g.files["manager"],
            BTreeSet::from(["error".to_owned(), "types".to_owned()])
        );
        assert_eq!(
            g.files["manager/inner"],
            BTreeSet::from(["error".to_owned()])
        );
        assert!(g.check(LAYERS).is_empty(), "{:?}", g.check(LAYERS));
    }

    #[test]
    fn an_import_upwards_and_a_circle_are_reported() {
        let g = graph(&[
            ("", "mod types; mod error; mod manager;"),
            ("types", "use crate::manager::Manager;"),
            ("error", "#[cfg_attr(feature = \"serde\", serde(with = \"crate::manager::codec\"))]\nstruct E;"),
            ("manager", "pub struct Manager; pub mod codec {}\nuse crate::types::X;"),
        ]);
        let problems = g.check(LAYERS);
        assert!(
            problems
                .iter()
                .any(|p| p == "types imports manager, which is above it"),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "error imports manager, which is above it"),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("import circle: ")),
            "{problems:?}"
        );
    }

    #[test]
    fn super_inside_an_inline_module_names_the_file() {
        let g = graph(&[
            ("", "mod types; mod error;"),
            ("types", "pub mod codec { use super::*; pub fn f() {} }"),
            ("error", "use crate::types::codec::f;"),
        ]);
        assert!(g.files["types"].is_empty(), "{:?}", g.files["types"]);
        assert_eq!(g.files["error"], BTreeSet::from(["types".to_owned()]));
    }

    #[test]
    fn the_library_keeps_its_layers() {
        let g =
            Graph::read(&crate::root().join("crates/ebpf-manager/src")).expect("library source");
        let problems = g.check(super::LAYERS);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
