//! Generates `$OUT_DIR/secret_api.rs` (included by `src/tl/mod.rs`) from `schema/secret_api.tl`.
//!
//! Definitions are split here (comments, `;`, `---functions---`) and each one is parsed with
//! `grammers-tl-parser`. Builtins (`int ? = Int;`, `bytes = Bytes;`, `vector ...`) and functions
//! are skipped; `boolFalse = Bool;`/`boolTrue = Bool;` have no explicit id and get the CRC32 id that
//! grammers computes (the standard `0xbc799737`/`0x997275b5`). Anything the generator does not
//! support (bare types, namespaces, recursion, ...) fails the build with a message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use grammers_tl_parser::tl::{Definition, ParameterType, Type};

const SCHEMA: &str = "schema/secret_api.tl";
const BUILTINS: &[&str] = &[
    "int", "long", "double", "string", "bytes", "vector", "int128", "int256",
];
const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "else", "enum", "extern", "false", "fn", "for", "if",
    "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
    "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn",
    "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized",
    "virtual", "yield", "try", "gen",
];

#[derive(Clone, Debug)]
enum Ty {
    Int,
    Long,
    Double,
    Str,
    Bytes,
    Boxed(String),
    Vector(Box<Ty>),
}

#[derive(Debug)]
enum Kind {
    Flags,
    Plain(Ty),
    Opt { flags: String, mask: u32, ty: Ty },
    True { flags: String, mask: u32 },
}

#[derive(Debug)]
struct Field {
    tl: String,
    rust: String,
    local: String,
    decl: String,
    kind: Kind,
}

#[derive(Debug)]
struct Ctor {
    tl: String,
    id: u32,
    explicit_id: bool,
    ty: String,
    rust: String,
    variant: String,
    section: String,
    text: String,
    fields: Vec<Field>,
}

fn main() {
    println!("cargo:rerun-if-changed={SCHEMA}");
    println!("cargo:rerun-if-changed=build.rs");
    let src = std::fs::read_to_string(SCHEMA).unwrap_or_else(|e| panic!("reading {SCHEMA}: {e}"));
    let code = generate(&src);
    // ok: cargo always sets OUT_DIR for build scripts.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("secret_api.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// Splits the schema into `(definition text, is_function, section)`.
fn split(src: &str) -> Vec<(String, bool, String)> {
    let mut defs = Vec::new();
    let mut section = "initial section (layer 8)".to_owned();
    let mut functions = false;
    let mut acc = String::new();
    for line in src.lines() {
        let (code, comment) = match line.find("//") {
            Some(i) => (&line[..i], Some(line[i + 2..].trim())),
            None => (line, None),
        };
        if let Some(c) = comment.filter(|c| c.starts_with("layer ")) {
            section = c.to_owned();
        }
        for (i, part) in code.split(';').enumerate() {
            if i > 0 {
                let mut text = acc.trim().to_owned();
                acc.clear();
                loop {
                    if let Some(rest) = text.strip_prefix("---functions---") {
                        functions = true;
                        text = rest.trim().to_owned();
                    } else if let Some(rest) = text.strip_prefix("---types---") {
                        functions = false;
                        text = rest.trim().to_owned();
                    } else {
                        break;
                    }
                }
                if !text.is_empty() {
                    defs.push((text, functions, section.clone()));
                }
            }
            acc.push_str(part);
            acc.push(' ');
        }
    }
    let rest = acc.trim();
    assert!(
        rest.is_empty() || rest.starts_with("---"),
        "schema ends without ';': {rest}"
    );
    defs
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn map_type(t: &Type, types: &BTreeSet<String>, ctx: &str) -> Ty {
    assert!(
        t.namespace.is_empty(),
        "{ctx}: namespaced types are not supported"
    );
    assert!(
        !t.generic_ref,
        "{ctx}: generic references are not supported"
    );
    match (t.name.as_str(), &t.generic_arg) {
        ("int", None) => Ty::Int,
        ("long", None) => Ty::Long,
        ("double", None) => Ty::Double,
        ("string", None) => Ty::Str,
        ("bytes", None) => Ty::Bytes,
        ("Vector", Some(arg)) => Ty::Vector(Box::new(map_type(arg, types, ctx))),
        (name, None) if types.contains(name) => Ty::Boxed(name.to_owned()),
        _ => panic!("{ctx}: unsupported field type {t}"),
    }
}

fn rust_type(t: &Ty) -> String {
    match t {
        Ty::Int => "i32".into(),
        Ty::Long => "i64".into(),
        Ty::Double => "f64".into(),
        Ty::Str => "String".into(),
        Ty::Bytes => "Vec<u8>".into(),
        Ty::Boxed(n) => format!("crate::tl::enums::{n}"),
        Ty::Vector(i) => format!("Vec<{}>", rust_type(i)),
    }
}

fn min_size(t: &Ty) -> usize {
    match t {
        Ty::Long | Ty::Double | Ty::Vector(_) => 8,
        Ty::Int | Ty::Str | Ty::Bytes | Ty::Boxed(_) => 4,
    }
}

fn referenced_types(t: &Ty, out: &mut BTreeSet<String>) {
    match t {
        Ty::Boxed(n) => {
            out.insert(n.clone());
        }
        Ty::Vector(i) => referenced_types(i, out),
        _ => {}
    }
}

fn type_is_eq(t: &Ty, eq: &BTreeMap<String, bool>) -> bool {
    match t {
        Ty::Double => false,
        Ty::Boxed(n) => eq[n],
        Ty::Vector(i) => type_is_eq(i, eq),
        _ => true,
    }
}

fn parse(src: &str) -> Vec<Ctor> {
    let mut defs = Vec::new();
    for (text, is_function, section) in split(src) {
        if is_function {
            continue;
        }
        let head = text.split_whitespace().next().unwrap_or_default();
        let name = head.split('#').next().unwrap_or_default();
        if BUILTINS.contains(&name) {
            continue;
        }
        let def: Definition = text
            .parse()
            .unwrap_or_else(|e| panic!("cannot parse TL definition `{text}`: {e:?}"));
        defs.push((def, head.contains('#'), section, text));
    }

    let types: BTreeSet<String> = defs.iter().map(|(d, ..)| d.ty.name.clone()).collect();
    let mut ctors = Vec::new();
    for (def, explicit_id, section, text) in defs {
        let ctx = def.full_name();
        assert!(
            def.namespace.is_empty(),
            "{ctx}: namespaced constructors are not supported"
        );
        assert!(
            def.ty.namespace.is_empty() && def.ty.generic_arg.is_none(),
            "{ctx}: unsupported result type"
        );
        assert!(
            def.ty.name.starts_with(|c: char| c.is_ascii_uppercase()),
            "{ctx}: the result type must start with an uppercase letter"
        );
        let rust = upper_first(&def.name);
        let variant = match rust.strip_prefix(def.ty.name.as_str()) {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_uppercase()) => rest.to_owned(),
            _ => rust.clone(),
        };
        let mut flag_names = BTreeSet::new();
        let mut fields = Vec::new();
        for p in &def.params {
            assert!(
                p.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && p.name.starts_with(|c: char| c.is_ascii_lowercase()),
                "{ctx}: unsupported field name {}",
                p.name
            );
            let rust_name = if KEYWORDS.contains(&p.name.as_str()) {
                format!("r#{}", p.name)
            } else {
                p.name.clone()
            };
            let kind = match &p.ty {
                ParameterType::Flags => {
                    flag_names.insert(p.name.clone());
                    Kind::Flags
                }
                ParameterType::Normal { ty, flag: None } => Kind::Plain(map_type(ty, &types, &ctx)),
                ParameterType::Normal { ty, flag: Some(f) } => {
                    assert!(
                        flag_names.contains(&f.name),
                        "{ctx}: unknown flags field {}",
                        f.name
                    );
                    assert!(f.index < 32, "{ctx}: flag index {} out of range", f.index);
                    let mask = 1u32 << f.index;
                    if ty.name == "true" && ty.namespace.is_empty() && ty.generic_arg.is_none() {
                        Kind::True {
                            flags: f.name.clone(),
                            mask,
                        }
                    } else {
                        Kind::Opt {
                            flags: f.name.clone(),
                            mask,
                            ty: map_type(ty, &types, &ctx),
                        }
                    }
                }
            };
            fields.push(Field {
                tl: p.name.clone(),
                rust: rust_name,
                local: format!("v_{}", p.name),
                decl: p.to_string(),
                kind,
            });
        }
        ctors.push(Ctor {
            tl: def.name.clone(),
            id: def.id,
            explicit_id,
            ty: def.ty.name.clone(),
            rust,
            variant,
            section,
            text,
            fields,
        });
    }
    ctors
}

/// Statements appending `var` (a `&T` variable) to `out`.
fn gen_write(t: &Ty, var: &str, depth: usize) -> String {
    match t {
        Ty::Int => format!("write_i32(out, *{var});"),
        Ty::Long => format!("write_i64(out, *{var});"),
        Ty::Double => format!("write_f64(out, *{var});"),
        Ty::Str => format!("write_string(out, {var});"),
        Ty::Bytes => format!("write_bytes(out, {var});"),
        Ty::Boxed(_) => format!("crate::tl::Serializable::serialize({var}, out);"),
        Ty::Vector(i) => {
            let e = format!("e{depth}");
            format!(
                "write_vector_len(out, {var}.len()); for {e} in {var} {{ {} }}",
                gen_write(i, &e, depth + 1)
            )
        }
    }
}

/// An expression for the encoded length of `var` (a `&T`), saturating instead of overflowing.
fn gen_len(t: &Ty, var: &str, depth: usize) -> String {
    match t {
        Ty::Int => "4usize".into(),
        Ty::Long | Ty::Double => "8usize".into(),
        Ty::Str | Ty::Bytes => format!("bytes_len({var}.len())"),
        Ty::Boxed(_) => format!("crate::tl::Serializable::serialized_len({var})"),
        Ty::Vector(i) => {
            let e = format!("e{depth}");
            format!(
                "{var}.iter().fold(8usize, |a, {e}| a.saturating_add({}))",
                gen_len(i, &e, depth + 1)
            )
        }
    }
}

/// An expression reading a `T` from `r` (with `?`).
fn gen_read(t: &Ty, depth: usize) -> String {
    match t {
        Ty::Int => "r.read_i32()?".into(),
        Ty::Long => "r.read_i64()?".into(),
        Ty::Double => "r.read_f64()?".into(),
        Ty::Str => "r.read_string()?".into(),
        Ty::Bytes => "r.read_bytes()?.to_vec()".into(),
        Ty::Boxed(n) => {
            format!("<crate::tl::enums::{n} as crate::tl::Deserializable>::deserialize(r)?")
        }
        Ty::Vector(i) => format!(
            "{{ let n{depth} = r.read_vector_len({})?; let mut v{depth} = Vec::new(); \
             for _ in 0..n{depth} {{ v{depth}.push({}); }} v{depth} }}",
            min_size(i),
            gen_read(i, depth + 1)
        ),
    }
}

/// An expression converting `var` (a `&T`) to a `serde_json::Value`.
fn gen_to_json(t: &Ty, var: &str, depth: usize) -> String {
    match t {
        Ty::Int => format!("serde_json::Value::from(*{var})"),
        Ty::Long => format!("json::long_to_json(*{var})"),
        Ty::Double => format!("json::double_to_json(*{var})"),
        Ty::Str => format!("serde_json::Value::String({var}.clone())"),
        Ty::Bytes => format!("json::bytes_to_json({var})"),
        Ty::Boxed(_) => format!("crate::tl::json::TlJson::to_json({var})"),
        Ty::Vector(i) => {
            let e = format!("e{depth}");
            format!(
                "serde_json::Value::Array({var}.iter().map(|{e}| {}).collect())",
                gen_to_json(i, &e, depth + 1)
            )
        }
    }
}

/// A function expression `Fn(&serde_json::Value) -> Result<T, JsonError>`.
fn gen_from_json(t: &Ty, depth: usize) -> String {
    match t {
        Ty::Int => "json::int_from_json".into(),
        Ty::Long => "json::long_from_json".into(),
        Ty::Double => "json::double_from_json".into(),
        Ty::Str => "json::string_from_json".into(),
        Ty::Bytes => "json::bytes_from_json".into(),
        Ty::Boxed(n) => format!("<crate::tl::enums::{n} as crate::tl::json::TlJson>::from_json"),
        Ty::Vector(i) => format!(
            "|x{depth}: &serde_json::Value| json::vec_from_json(x{depth}, {})",
            gen_from_json(i, depth + 1)
        ),
    }
}

fn check_acyclic(by_type: &BTreeMap<String, Vec<&Ctor>>) {
    fn visit(
        t: &str,
        by_type: &BTreeMap<String, Vec<&Ctor>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) {
        match state.get(t) {
            Some(2) => return,
            Some(1) => panic!(
                "recursive TL types are not supported: {} -> {t}",
                stack.join(" -> ")
            ),
            _ => {}
        }
        state.insert(t.to_owned(), 1);
        stack.push(t.to_owned());
        let mut refs = BTreeSet::new();
        for c in &by_type[t] {
            for f in &c.fields {
                if let Kind::Plain(ty) | Kind::Opt { ty, .. } = &f.kind {
                    referenced_types(ty, &mut refs);
                }
            }
        }
        for r in refs {
            visit(&r, by_type, state, stack);
        }
        stack.pop();
        state.insert(t.to_owned(), 2);
    }
    let mut state = BTreeMap::new();
    for t in by_type.keys() {
        visit(t, by_type, &mut state, &mut Vec::new());
    }
}

fn generate(src: &str) -> String {
    let ctors = parse(src);
    let mut by_type: BTreeMap<String, Vec<&Ctor>> = BTreeMap::new();
    for c in &ctors {
        by_type.entry(c.ty.clone()).or_default().push(c);
    }
    check_acyclic(&by_type);
    {
        let mut ids = BTreeMap::new();
        let mut names = BTreeSet::new();
        for c in &ctors {
            if let Some(other) = ids.insert(c.id, &c.tl) {
                panic!("duplicate constructor id {:#x}: {other} and {}", c.id, c.tl);
            }
            assert!(
                names.insert(c.rust.clone()),
                "duplicate constructor name {}",
                c.rust
            );
        }
        for (t, cs) in &by_type {
            let mut variants = BTreeSet::new();
            for c in cs {
                assert!(
                    variants.insert(&c.variant),
                    "duplicate variant {t}::{}",
                    c.variant
                );
            }
        }
    }

    // Eq is derivable iff no f64 is reachable (fixpoint; the schema is acyclic).
    let mut eq: BTreeMap<String, bool> = by_type.keys().map(|t| (t.clone(), true)).collect();
    loop {
        let mut changed = false;
        for (t, cs) in &by_type {
            let v = cs.iter().all(|c| ctor_is_eq(c, &eq));
            if eq[t] != v {
                eq.insert(t.clone(), v);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }

    let mut o = String::new();
    o.push_str("// @generated by build.rs from schema/secret_api.tl. Do not edit.\n\n");

    // ---- types ----
    o.push_str("/// One struct per TL constructor (generated from `schema/secret_api.tl`).\npub mod types {\n");
    o.push_str("#![allow(clippy::upper_case_acronyms, clippy::redundant_closure)]\n");
    o.push_str("#[allow(unused_imports)]\nuse crate::tl::{bytes_len, json, write_bytes, write_f64, write_i32, write_i64, write_string, write_u32, write_vector_len, JsonError, Reader, TlError};\n\n");
    for c in &ctors {
        gen_struct(&mut o, c, ctor_is_eq(c, &eq));
    }
    o.push_str("}\n\n");

    // ---- enums ----
    o.push_str("/// One enum per TL type (generated from `schema/secret_api.tl`); each variant wraps the\n/// constructor's struct from [`types`].\npub mod enums {\n");
    o.push_str("#![allow(clippy::upper_case_acronyms, clippy::large_enum_variant)]\n");
    o.push_str(
        "#[allow(unused_imports)]\nuse crate::tl::{json, types, JsonError, Reader, TlError};\n\n",
    );
    for (t, cs) in &by_type {
        gen_enum(&mut o, t, cs, eq[t]);
    }
    o.push_str("}\n\n");

    // ---- tables and dispatch ----
    let explicit = ctors.iter().filter(|c| c.explicit_id).count();
    let _ = writeln!(
        o,
        "/// Every constructor of a non-builtin type, in schema order: `(name, id)`.\n///\n\
         /// {} entries: {explicit} with an explicit id and {} without (`boolFalse`/`boolTrue`,\n\
         /// whose ids are the CRC32 of their definition, as for any TL definition without an id).\n\
         pub const ALL_CONSTRUCTORS: &[(&str, u32)] = &[",
        ctors.len(),
        ctors.len() - explicit,
    );
    for c in &ctors {
        let _ = writeln!(o, "    ({:?}, {:#010x}),", c.tl, c.id);
    }
    o.push_str("];\n\n");

    o.push_str("/// The schema name of the constructor with this id, if any.\npub fn constructor_name(id: u32) -> Option<&'static str> {\n    match id {\n");
    for c in &ctors {
        let _ = writeln!(o, "        {:#010x} => Some({:?}),", c.id, c.tl);
    }
    o.push_str("        _ => None,\n    }\n}\n\n");

    o.push_str("fn gen_json_to_boxed(v: &serde_json::Value) -> Result<Vec<u8>, JsonError> {\n    match json::constructor_of(v)? {\n");
    for c in &ctors {
        let _ = writeln!(
            o,
            "        {:?} => Ok(Serializable::to_bytes(&<types::{} as TlJson>::from_json(v)?)),",
            c.tl, c.rust
        );
    }
    o.push_str("        other => Err(JsonError::UnknownConstructor { path: String::new(), name: other.to_owned(), expected: \"any constructor\" }),\n    }\n}\n\n");

    o.push_str("fn gen_boxed_to_json(r: &mut Reader<'_>) -> Result<serde_json::Value, TlError> {\n    let id = r.read_u32()?;\n    match id {\n");
    for c in &ctors {
        let _ = writeln!(
            o,
            "        {:#010x} => Ok(TlJson::to_json(&types::{}::deserialize_bare(r)?)),",
            c.id, c.rust
        );
    }
    o.push_str("        _ => Err(TlError::UnknownConstructor { id, type_name: \"any constructor\" }),\n    }\n}\n");
    o
}

fn ctor_is_eq(c: &Ctor, eq: &BTreeMap<String, bool>) -> bool {
    c.fields.iter().all(|f| match &f.kind {
        Kind::Plain(t) | Kind::Opt { ty: t, .. } => type_is_eq(t, eq),
        _ => true,
    })
}

fn doc_text(s: &str) -> String {
    s.replace('`', "'")
}

fn gen_struct(o: &mut String, c: &Ctor, is_eq: bool) {
    let derive = if is_eq {
        "Debug, Clone, PartialEq, Eq"
    } else {
        "Debug, Clone, PartialEq"
    };
    let _ = writeln!(
        o,
        "/// TL constructor `{}#{:08x}` of type [`crate::tl::enums::{}`] (schema: {}).\n///\n/// ```text\n/// {}\n/// ```\n#[derive({derive})]\npub struct {} {{",
        c.tl,
        c.id,
        c.ty,
        c.section,
        doc_text(&c.text),
        c.rust
    );
    for f in &c.fields {
        let ty = match &f.kind {
            Kind::Flags => continue,
            Kind::Plain(t) => rust_type(t),
            Kind::Opt { ty, .. } => format!("Option<{}>", rust_type(ty)),
            Kind::True { .. } => "bool".to_owned(),
        };
        let _ = writeln!(
            o,
            "    /// `{}`\n    pub {}: {ty},",
            doc_text(&f.decl),
            f.rust
        );
    }
    o.push_str("}\n\n");

    let stored: Vec<&Field> = c
        .fields
        .iter()
        .filter(|f| !matches!(f.kind, Kind::Flags))
        .collect();
    let destructure = if stored.is_empty() {
        String::new()
    } else {
        format!(
            "let Self {{ {} }} = self;",
            stored
                .iter()
                .map(|f| format!("{}: {}", f.rust, f.local))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };

    // Identifiable
    let _ = writeln!(
        o,
        "impl crate::tl::Identifiable for {} {{\n    const CONSTRUCTOR_ID: u32 = {:#010x};\n    const NAME: &'static str = {:?};\n}}\n",
        c.rust, c.id, c.tl
    );

    // inherent: serialize_bare / deserialize_bare
    let _ = writeln!(o, "impl {} {{", c.rust);
    let out_name = if stored.is_empty() && !c.fields.iter().any(|f| matches!(f.kind, Kind::Flags)) {
        "_out"
    } else {
        "out"
    };
    let _ = writeln!(
        o,
        "    /// Appends the bare encoding (the fields, without the constructor id) to `out`.\n    pub fn serialize_bare(&self, {out_name}: &mut Vec<u8>) {{\n        {destructure}"
    );
    for f in &c.fields {
        if let Kind::Flags = f.kind {
            let parts: Vec<String> = c
                .fields
                .iter()
                .filter_map(|g| match &g.kind {
                    Kind::Opt { flags, mask, .. } if *flags == f.tl => Some(format!(
                        "if {}.is_some() {{ {mask:#x} }} else {{ 0 }}",
                        g.local
                    )),
                    Kind::True { flags, mask } if *flags == f.tl => {
                        Some(format!("if *{} {{ {mask:#x} }} else {{ 0 }}", g.local))
                    }
                    _ => None,
                })
                .collect();
            let value = if parts.is_empty() {
                "0".to_owned()
            } else {
                parts.join(" | ")
            };
            let _ = writeln!(o, "        let fl_{}: u32 = {value};", f.tl);
        }
    }
    for f in &c.fields {
        match &f.kind {
            Kind::Flags => {
                let _ = writeln!(o, "        write_u32(out, fl_{});", f.tl);
            }
            Kind::Plain(t) => {
                let _ = writeln!(o, "        {}", gen_write(t, &f.local, 0));
            }
            Kind::Opt { ty, .. } => {
                let _ = writeln!(
                    o,
                    "        if let Some(x) = {} {{ {} }}",
                    f.local,
                    gen_write(ty, "x", 0)
                );
            }
            Kind::True { .. } => {}
        }
    }
    o.push_str("    }\n\n");

    let mut len_terms: Vec<String> = Vec::new();
    for f in &c.fields {
        match &f.kind {
            Kind::Flags => len_terms.push("4usize".into()),
            Kind::Plain(t) => len_terms.push(gen_len(t, &f.local, 0)),
            Kind::Opt { ty, .. } => len_terms.push(format!(
                "{}.as_ref().map_or(0usize, |x| {})",
                f.local,
                gen_len(ty, "x", 0)
            )),
            Kind::True { .. } => {}
        }
    }
    let len_body = if len_terms.is_empty() {
        "0".to_owned()
    } else {
        format!(
            "{destructure}\n        0usize{}",
            len_terms
                .iter()
                .map(|t| format!(".saturating_add({t})"))
                .collect::<String>()
        )
    };
    let _ = writeln!(
        o,
        "    /// The length of the bare encoding, computed without encoding (saturating).\n    #[allow(unused_variables)]\n    pub fn serialized_len_bare(&self) -> usize {{\n        {len_body}\n    }}\n"
    );

    let r_name = if c.fields.is_empty() { "_r" } else { "r" };
    let _ = writeln!(
        o,
        "    /// Reads the bare encoding (the fields, without the constructor id).\n    pub fn deserialize_bare({r_name}: &mut Reader<'_>) -> Result<Self, TlError> {{"
    );
    for f in &c.fields {
        match &f.kind {
            Kind::Flags => {
                let known: u32 = c
                    .fields
                    .iter()
                    .map(|g| match &g.kind {
                        Kind::Opt { flags, mask, .. } | Kind::True { flags, mask }
                            if *flags == f.tl =>
                        {
                            *mask
                        }
                        _ => 0,
                    })
                    .fold(0, |a, b| a | b);
                let _ = writeln!(
                    o,
                    "        let fl_{0} = r.read_u32()?;\n        if fl_{0} & !{known:#x} != 0 {{ r.note_noncanonical(); }}",
                    f.tl
                );
            }
            Kind::Plain(t) => {
                let _ = writeln!(o, "        let {} = {};", f.local, gen_read(t, 0));
            }
            Kind::Opt { flags, mask, ty } => {
                let _ = writeln!(
                    o,
                    "        let {} = if fl_{flags} & {mask:#x} != 0 {{ Some({}) }} else {{ None }};",
                    f.local,
                    gen_read(ty, 0)
                );
            }
            Kind::True { flags, mask } => {
                let _ = writeln!(o, "        let {} = fl_{flags} & {mask:#x} != 0;", f.local);
            }
        }
    }
    let _ = writeln!(
        o,
        "        Ok(Self {{ {} }})\n    }}\n}}\n",
        stored
            .iter()
            .map(|f| format!("{}: {}", f.rust, f.local))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Serializable / Deserializable
    let _ = writeln!(
        o,
        "impl crate::tl::Serializable for {0} {{\n    fn serialize(&self, out: &mut Vec<u8>) {{\n        write_u32(out, {1:#010x});\n        self.serialize_bare(out);\n    }}\n\n    fn serialized_len(&self) -> usize {{\n        4usize.saturating_add(self.serialized_len_bare())\n    }}\n}}\n\n\
         impl crate::tl::Deserializable for {0} {{\n    fn deserialize(r: &mut Reader<'_>) -> Result<Self, TlError> {{\n        let id = r.read_u32()?;\n        if id != {1:#010x} {{\n            return Err(TlError::UnknownConstructor {{ id, type_name: {2:?} }});\n        }}\n        Self::deserialize_bare(r)\n    }}\n}}\n",
        c.rust, c.id, c.tl
    );

    // TlJson
    let _ = writeln!(
        o,
        "impl crate::tl::json::TlJson for {} {{\n    fn to_json(&self) -> serde_json::Value {{\n        {destructure}\n        let mut m = serde_json::Map::new();\n        m.insert(\"_\".to_owned(), serde_json::Value::from({:?}));",
        c.rust, c.tl
    );
    for f in &stored {
        match &f.kind {
            Kind::Plain(t) => {
                let _ = writeln!(
                    o,
                    "        m.insert({:?}.to_owned(), {});",
                    f.tl,
                    gen_to_json(t, &f.local, 0)
                );
            }
            Kind::Opt { ty, .. } => {
                let _ = writeln!(
                    o,
                    "        if let Some(x) = {} {{ m.insert({:?}.to_owned(), {}); }}",
                    f.local,
                    f.tl,
                    gen_to_json(ty, "x", 0)
                );
            }
            Kind::True { .. } => {
                let _ = writeln!(
                    o,
                    "        if *{} {{ m.insert({:?}.to_owned(), serde_json::Value::Bool(true)); }}",
                    f.local, f.tl
                );
            }
            Kind::Flags => {}
        }
    }
    o.push_str("        serde_json::Value::Object(m)\n    }\n\n");
    let keys = stored
        .iter()
        .map(|f| format!("{:?}", f.tl))
        .collect::<Vec<_>>()
        .join(", ");
    let m_name = if stored.is_empty() { "_m" } else { "m" };
    let _ = writeln!(
        o,
        "    fn from_json(v: &serde_json::Value) -> Result<Self, JsonError> {{\n        let {m_name} = json::check_struct(v, {:?}, &[{keys}])?;\n        Ok(Self {{",
        c.tl
    );
    for f in &stored {
        let e = match &f.kind {
            Kind::Plain(t) => format!("json::req(m, {:?}, {})?", f.tl, gen_from_json(t, 0)),
            Kind::Opt { ty, .. } => format!("json::opt(m, {:?}, {})?", f.tl, gen_from_json(ty, 0)),
            Kind::True { .. } => format!("json::flag(m, {:?})?", f.tl),
            Kind::Flags => continue,
        };
        let _ = writeln!(o, "            {}: {e},", f.rust);
    }
    o.push_str("        })\n    }\n}\n\n");
}

fn gen_enum(o: &mut String, t: &str, cs: &[&Ctor], is_eq: bool) {
    let derive = if is_eq {
        "Debug, Clone, PartialEq, Eq"
    } else {
        "Debug, Clone, PartialEq"
    };
    let _ = writeln!(
        o,
        "/// TL type `{t}` ({} constructors).\n#[derive({derive})]\npub enum {t} {{",
        cs.len()
    );
    for c in cs {
        let _ = writeln!(
            o,
            "    /// `{}#{:08x}`\n    {}(types::{}),",
            c.tl, c.id, c.variant, c.rust
        );
    }
    o.push_str("}\n\n");

    let arms = |body: &str| -> String {
        cs.iter()
            .map(|c| format!("            Self::{}(x) => {body},\n", c.variant))
            .collect()
    };
    let _ = writeln!(
        o,
        "impl {t} {{\n    /// The constructor id of the variant.\n    pub fn constructor_id(&self) -> u32 {{\n        match self {{\n{}        }}\n    }}\n\n    /// The schema name of the variant's constructor.\n    pub fn constructor_name(&self) -> &'static str {{\n        match self {{\n{}        }}\n    }}\n}}\n",
        cs.iter()
            .map(|c| format!("            Self::{}(_) => {:#010x},\n", c.variant, c.id))
            .collect::<String>(),
        cs.iter()
            .map(|c| format!("            Self::{}(_) => {:?},\n", c.variant, c.tl))
            .collect::<String>(),
    );
    let _ = writeln!(
        o,
        "impl crate::tl::Serializable for {t} {{\n    fn serialize(&self, out: &mut Vec<u8>) {{\n        match self {{\n{}        }}\n    }}\n\n    fn serialized_len(&self) -> usize {{\n        match self {{\n{}        }}\n    }}\n}}\n",
        arms("crate::tl::Serializable::serialize(x, out)"),
        arms("crate::tl::Serializable::serialized_len(x)")
    );
    let _ = writeln!(
        o,
        "impl crate::tl::Deserializable for {t} {{\n    fn deserialize(r: &mut Reader<'_>) -> Result<Self, TlError> {{\n        let id = r.read_u32()?;\n        match id {{"
    );
    for c in cs {
        let _ = writeln!(
            o,
            "            {:#010x} => Ok(Self::{}(types::{}::deserialize_bare(r)?)),",
            c.id, c.variant, c.rust
        );
    }
    let _ = writeln!(
        o,
        "            _ => Err(TlError::UnknownConstructor {{ id, type_name: {t:?} }}),\n        }}\n    }}\n}}\n"
    );
    let _ = writeln!(
        o,
        "impl crate::tl::json::TlJson for {t} {{\n    fn to_json(&self) -> serde_json::Value {{\n        match self {{\n{}        }}\n    }}\n\n    fn from_json(v: &serde_json::Value) -> Result<Self, JsonError> {{\n        match json::constructor_of(v)? {{",
        arms("crate::tl::json::TlJson::to_json(x)")
    );
    for c in cs {
        let _ = writeln!(
            o,
            "            {:?} => Ok(Self::{}(<types::{} as crate::tl::json::TlJson>::from_json(v)?)),",
            c.tl, c.variant, c.rust
        );
    }
    let _ = writeln!(
        o,
        "            other => Err(JsonError::UnknownConstructor {{ path: String::new(), name: other.to_owned(), expected: {t:?} }}),\n        }}\n    }}\n}}\n"
    );
    for c in cs {
        let _ = writeln!(
            o,
            "impl From<types::{0}> for {t} {{\n    fn from(x: types::{0}) -> Self {{\n        Self::{1}(x)\n    }}\n}}\n",
            c.rust, c.variant
        );
    }
}
