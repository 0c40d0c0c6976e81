//! A check that a crate's imports point down its layers and never around a cycle, run by each
//! service's `arrows_point_down` test over its own `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Fails unless, in the crate at `src`, every file uses (`crate::m`) only modules of its own
/// layer or a lower one, `layers` naming each layer's top-level modules bottom first (`lib`
/// stands above them all; `main` and `testing` are not read), and no files import each other
/// around a cycle. Inline `#[cfg(test)]` modules and comments are not read.
///
/// # Panics
/// Naming the file and import that break a rule, or a cycle's files.
pub fn assert_arrows_point_down(src: &Path, layers: &[&[&str]]) {
    let layer = |module: &str| layers.iter().position(|l| l.contains(&module));
    let mut imports: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in rust_files(src) {
        let module = module_of(src, &file);
        let top = module.first().map_or("lib", String::as_str);
        if top == "main" || top == "testing" {
            continue;
        }
        let from = (top != "lib").then(|| layer(top));
        assert!(
            from != Some(None),
            "{}: module `{top}` is in no layer",
            file.display()
        );
        for path in import_paths(&code_of(&file), &children(src, &module)) {
            if path[0] == "crate" && path.len() > 1 {
                let to = layer(&path[1]);
                assert!(
                    from.flatten()
                        .is_none_or(|from| to.is_some_and(|to| to <= from)),
                    "{} uses crate::{}, which is not below it",
                    file.display(),
                    path[1]
                );
            }
            let target = resolve(src, &module, &path);
            if target != file {
                imports.entry(file.clone()).or_default().insert(target);
            }
        }
    }
    for start in imports.keys() {
        assert_no_cycle(&imports, start, &mut vec![start.clone()]);
    }
}

fn assert_no_cycle(
    imports: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    at: &Path,
    trail: &mut Vec<PathBuf>,
) {
    for next in imports.get(at).into_iter().flatten() {
        assert!(
            next != &trail[0],
            "import cycle: {trail:?} -> {}",
            next.display()
        );
        if !trail.contains(next) {
            trail.push(next.clone());
            assert_no_cycle(imports, next, trail);
            trail.pop();
        }
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `src/a/b.rs` is module `[a, b]`; `src/a/mod.rs` is `[a]`; `src/lib.rs` is `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut module: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if module.last().is_some_and(|m| m == "mod" || m == "lib") {
        module.pop();
    }
    module
}

fn file_of(src: &Path, module: &[String]) -> Option<PathBuf> {
    if module.is_empty() {
        return Some(src.join("lib.rs"));
    }
    let base = module.iter().fold(src.to_path_buf(), |p, m| p.join(m));
    [base.with_extension("rs"), base.join("mod.rs")]
        .into_iter()
        .find(|f| f.is_file())
}

fn children(src: &Path, module: &[String]) -> Vec<String> {
    let dir = module.iter().fold(src.to_path_buf(), |p, m| p.join(m));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let paths = entries.flatten().map(|e| e.path());
    paths
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect()
}

/// The file's code before its inline test module, without comments.
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("read source");
    let inline_tests = text.match_indices("#[cfg(test)]").find(|(i, attr)| {
        let item = text[i + attr.len()..].trim_start();
        let block = item.find('{');
        item.starts_with("mod ") && block.is_some_and(|b| item.find(';').is_none_or(|s| b < s))
    });
    let before_tests = &text[..inline_tests.map_or(text.len(), |(i, _)| i)];
    let lines = before_tests
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default());
    lines.collect::<Vec<_>>().join("\n")
}

/// Every `crate::` and `super::` path, and every `use` of a child module, group braces
/// expanded: `crate::a::{b, c::d}` gives `[crate, a, b]` and `[crate, a, c, d]`.
fn import_paths(code: &str, children: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = code[..i].chars().next_back();
        if !before.is_some_and(|c| c.is_alphanumeric() || "_$:".contains(c)) {
            expand(Vec::new(), &code[i..], &mut out);
        }
    }
    for (i, _) in code.match_indices("use ") {
        let rest = code[i + 4..].trim_start();
        if children.iter().any(|c| rest.starts_with(&format!("{c}::"))) {
            expand(vec!["self".to_owned()], rest, &mut out);
        }
    }
    out
}

fn expand(mut path: Vec<String>, mut rest: &str, out: &mut Vec<Vec<String>>) {
    loop {
        let len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let end = group
                    .find(|c| {
                        depth += i32::from(c == '{') - i32::from(c == '}');
                        depth < 0
                    })
                    .unwrap_or(group.len());
                for item in split_top_level(&group[..end]) {
                    expand(path.clone(), item.trim(), out);
                }
                return;
            }
            break;
        }
        path.push(rest[..len].to_owned());
        match rest[len..].strip_prefix("::") {
            Some(more) => rest = more,
            None => break,
        }
    }
    out.push(path);
}

fn split_top_level(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// The file a path from `module` names: the deepest module file along it.
fn resolve(src: &Path, module: &[String], path: &[String]) -> PathBuf {
    let mut at = module.to_vec();
    for segment in path {
        match segment.as_str() {
            "crate" => at.clear(),
            "self" => {}
            "super" => {
                at.pop();
            }
            name => {
                at.push(name.to_owned());
                if file_of(src, &at).is_none() {
                    at.pop();
                    break;
                }
            }
        }
    }
    file_of(src, &at).unwrap_or_else(|| src.join("lib.rs"))
}
