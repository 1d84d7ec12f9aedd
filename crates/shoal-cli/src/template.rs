//! A subset of Go's `text/template`, enough for docker's `--format` flags.
//!
//! Supported: text, `{{.Field.Sub}}`, `{{.}}`, variables (`$`, `$x := ...`),
//! pipelines with `|`, parenthesised sub-pipelines, string/number/bool literals,
//! trim markers (`{{-` / `-}}`), comments, `if`/`else if`/`else`/`end`,
//! `range` (optionally `$i, $v :=`), `with`, and docker's template functions
//! (`json`, `join`, `split`, `title`, `lower`, `upper`, `pad`, `truncate`) plus
//! Go's builtins `len`, `index`, `eq`, `ne`, `lt`, `le`, `gt`, `ge`, `not`,
//! `and`, `or`, `print`, `println`, `printf`. Data is a `serde_json::Value`.

use serde_json::Value;

use crate::format::go_json;

/// How field lookups and functions behave while executing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Rendering a data row: unknown fields are errors, as on docker's typed contexts.
    Row,
    /// Rendering a table header from the field-to-title map: functions pass their
    /// argument through (docker's `HeaderFunctions`) and lookups never fail.
    Header,
    /// Rendering decoded JSON (inspect): unknown fields read as `<no value>`.
    Lenient,
}

#[derive(Debug, Clone)]
enum Arg {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Num(f64, bool),
    Bool(bool),
    Nil,
    Ident(String),
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone)]
struct Pipeline {
    decl: Vec<String>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(start) = rest.find("{{") else {
            let mut text = rest.to_string();
            if trim_next {
                text = text.trim_start().to_string();
            }
            pieces.push(Piece::Text(text));
            break;
        };
        let mut text = rest[..start].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let trim_left = after.starts_with("- ")
            || after.starts_with("-\t")
            || after.starts_with("-\n")
            || after.starts_with("-\r");
        if trim_left {
            text = text.trim_end().to_string();
        }
        pieces.push(Piece::Text(text));
        let inner_start = if trim_left { 2 } else { 0 };
        let end =
            find_action_end(&after[inner_start..]).ok_or_else(|| "unclosed action".to_string())?;
        let mut inner = &after[inner_start..inner_start + end];
        trim_next = false;
        if inner.ends_with(" -")
            || inner.ends_with("\t-")
            || inner.ends_with("\n-")
            || inner.ends_with("\r-")
        {
            inner = &inner[..inner.len() - 1];
            trim_next = true;
        }
        pieces.push(Piece::Action(inner.trim().to_string()));
        rest = &after[inner_start + end + 2..];
    }
    Ok(pieces)
}

/// Position of the closing `}}` of an action, skipping quoted strings.
fn find_action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if i + 1 < b.len() && b[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Pipe,
    Open,
    Close,
    Declare,
    Assign,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                toks.push(Tok::Open);
                i += 1;
            }
            ')' => {
                toks.push(Tok::Close);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            '"' => {
                let mut out = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("unterminated quoted string".to_string());
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return Err("unterminated quoted string".to_string());
                            };
                            i += 1;
                            out.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '0' => '\0',
                                other => other,
                            });
                        }
                        c => out.push(c),
                    }
                }
                toks.push(Tok::Str(out));
            }
            '`' => {
                let mut out = String::new();
                i += 1;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("unterminated raw quoted string".to_string());
                    };
                    i += 1;
                    if c == '`' {
                        break;
                    }
                    out.push(c);
                }
                toks.push(Tok::Str(out));
            }
            _ => {
                let start = i;
                let ends_word = |i: usize| {
                    chars[i].is_whitespace()
                        || matches!(chars[i], '|' | '(' | ')' | ',' | '"' | '`' | '=')
                        || (chars[i] == ':' && chars.get(i + 1) == Some(&'='))
                };
                while i < chars.len() && !ends_word(i) {
                    i += 1;
                }
                toks.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(toks)
}

fn split_fields(s: &str) -> Result<Vec<String>, String> {
    // ".A.B" -> ["A", "B"]
    let fields: Vec<String> = s.split('.').skip(1).map(str::to_string).collect();
    if fields.iter().any(|f| f.is_empty()) {
        return Err(format!("bad field reference {s:?}"));
    }
    Ok(fields)
}

fn word_arg(w: &str) -> Result<Arg, String> {
    if w == "." {
        return Ok(Arg::Dot);
    }
    if w.starts_with('.') {
        return Ok(Arg::Field(split_fields(w)?));
    }
    if let Some(rest) = w.strip_prefix('$') {
        let (name, fields) = match rest.find('.') {
            Some(i) => (&rest[..i], split_fields(&rest[i..])?),
            None => (rest, vec![]),
        };
        return Ok(Arg::Var(format!("${name}"), fields));
    }
    match w {
        "true" => return Ok(Arg::Bool(true)),
        "false" => return Ok(Arg::Bool(false)),
        "nil" => return Ok(Arg::Nil),
        _ => {}
    }
    if w.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        let is_int = !w.contains(['.', 'e', 'E']);
        return w
            .parse::<f64>()
            .map(|n| Arg::Num(n, is_int))
            .map_err(|_| format!("bad number syntax: {w:?}"));
    }
    if w.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Ok(Arg::Ident(w.to_string()));
    }
    Err(format!("unexpected {w:?} in command"))
}

struct PipeParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl PipeParser {
    fn pipeline(&mut self, allow_decl: bool) -> Result<Pipeline, String> {
        let mut decl = Vec::new();
        if allow_decl {
            // `$x :=`, `$i, $v :=`
            let save = self.pos;
            let mut names = Vec::new();
            loop {
                match self.toks.get(self.pos) {
                    Some(Tok::Word(w)) if w.starts_with('$') && !w.contains('.') => {
                        names.push(w.clone());
                        self.pos += 1;
                    }
                    _ => break,
                }
                match self.toks.get(self.pos) {
                    Some(Tok::Comma) => self.pos += 1,
                    Some(Tok::Declare) | Some(Tok::Assign) => {
                        self.pos += 1;
                        decl = names.clone();
                        break;
                    }
                    _ => break,
                }
            }
            if decl.is_empty() {
                self.pos = save;
            }
        }
        let mut cmds = Vec::new();
        let mut cmd: Vec<Arg> = Vec::new();
        loop {
            match self.toks.get(self.pos).cloned() {
                None | Some(Tok::Close) => break,
                Some(Tok::Pipe) => {
                    self.pos += 1;
                    if cmd.is_empty() {
                        return Err("missing command in pipeline".to_string());
                    }
                    cmds.push(std::mem::take(&mut cmd));
                }
                Some(Tok::Open) => {
                    self.pos += 1;
                    let inner = self.pipeline(false)?;
                    if self.toks.get(self.pos) != Some(&Tok::Close) {
                        return Err("unclosed left paren".to_string());
                    }
                    self.pos += 1;
                    // (pipeline).Field
                    let mut fields = Vec::new();
                    if let Some(Tok::Word(w)) = self.toks.get(self.pos) {
                        if w.starts_with('.') && w.len() > 1 {
                            fields = split_fields(w)?;
                            self.pos += 1;
                        }
                    }
                    cmd.push(Arg::Sub(Box::new(inner), fields));
                }
                Some(Tok::Str(s)) => {
                    self.pos += 1;
                    cmd.push(Arg::Str(s));
                }
                Some(Tok::Word(w)) => {
                    self.pos += 1;
                    cmd.push(word_arg(&w)?);
                }
                Some(t) => return Err(format!("unexpected {t:?} in command")),
            }
        }
        if cmd.is_empty() {
            if cmds.is_empty() && decl.is_empty() {
                return Err("missing value for command".to_string());
            }
            if !cmds.is_empty() {
                return Err("missing command in pipeline".to_string());
            }
        } else {
            cmds.push(cmd);
        }
        Ok(Pipeline { decl, cmds })
    }
}

fn parse_pipeline(src: &str, allow_decl: bool) -> Result<Pipeline, String> {
    let mut p = PipeParser {
        toks: tokenize(src)?,
        pos: 0,
    };
    let pipe = p.pipeline(allow_decl)?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected token in {src:?}"));
    }
    Ok(pipe)
}

enum Stop {
    End,
    Else(Option<String>),
    Eof,
}

struct Parser {
    pieces: Vec<Piece>,
    pos: usize,
}

impl Parser {
    fn list(&mut self) -> Result<(Vec<Node>, Stop), String> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.get(self.pos).cloned() {
            self.pos += 1;
            match piece {
                Piece::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t));
                    }
                }
                Piece::Action(a) => {
                    if a.starts_with("/*") {
                        continue;
                    }
                    let (kw, rest) = match a.split_once(char::is_whitespace) {
                        Some((k, r)) => (k, r.trim()),
                        None => (a.as_str(), ""),
                    };
                    match kw {
                        "end" => return Ok((nodes, Stop::End)),
                        "else" => {
                            let cond = rest.strip_prefix("if").map(|r| r.trim().to_string());
                            return Ok((nodes, Stop::Else(cond)));
                        }
                        "if" => nodes.push(self.if_node(rest)?),
                        "range" | "with" => {
                            let pipe = parse_pipeline(rest, true)?;
                            let (body, stop) = self.list()?;
                            let else_body = match stop {
                                Stop::End => Vec::new(),
                                Stop::Else(None) => {
                                    let (b, stop) = self.list()?;
                                    if !matches!(stop, Stop::End) {
                                        return Err(format!("unexpected EOF in {kw}"));
                                    }
                                    b
                                }
                                _ => return Err(format!("unexpected EOF in {kw}")),
                            };
                            nodes.push(if kw == "range" {
                                Node::Range(pipe, body, else_body)
                            } else {
                                Node::With(pipe, body, else_body)
                            });
                        }
                        "template" | "define" | "block" | "break" | "continue" => {
                            return Err(format!("{kw:?} is not supported"))
                        }
                        _ => nodes.push(Node::Action(parse_pipeline(&a, true)?)),
                    }
                }
            }
        }
        Ok((nodes, Stop::Eof))
    }

    fn if_node(&mut self, cond: &str) -> Result<Node, String> {
        let mut branches = Vec::new();
        let mut cond = cond.to_string();
        loop {
            let pipe = parse_pipeline(&cond, true)?;
            let (body, stop) = self.list()?;
            branches.push((pipe, body));
            match stop {
                Stop::End => return Ok(Node::If(branches, Vec::new())),
                Stop::Else(Some(next)) => cond = next,
                Stop::Else(None) => {
                    let (else_body, stop) = self.list()?;
                    if !matches!(stop, Stop::End) {
                        return Err("unexpected EOF in if".to_string());
                    }
                    return Ok(Node::If(branches, else_body));
                }
                Stop::Eof => return Err("unexpected EOF in if".to_string()),
            }
        }
    }
}

/// Go's notion of truth: false, 0, nil and empty strings/collections are false.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(false),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// How Go's `fmt.Print` shows a decoded JSON value.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e21 {
                    format!("{f:.0}")
                } else {
                    format!("{f}")
                }
            } else {
                n.to_string()
            }
        }
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_print_inner).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            format!(
                "map[{}]",
                keys.iter()
                    .map(|k| format!("{k}:{}", go_print_inner(&o[k.as_str()])))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

fn go_print_inner(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        other => go_print(other),
    }
}

struct Exec<'a> {
    root: &'a Value,
    vars: Vec<(String, Value)>,
    mode: Mode,
    out: String,
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn cmp_values(a: &Value, b: &Value) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a)
            .zip(num(b))
            .and_then(|(x, y)| x.partial_cmp(&y))
            .ok_or_else(|| "incomparable numbers".to_string()),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        _ => Err("incompatible types for comparison".to_string()),
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a) == num(b),
        _ => a == b,
    }
}

fn as_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => go_print(other),
    }
}

fn go_printf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => match args.next() {
                Some(v) => out.push_str(&format!("{:?}", as_string(v))),
                None => out.push_str("%!q(MISSING)"),
            },
            Some(verb @ ('s' | 'v' | 'd')) => match args.next() {
                Some(v) => out.push_str(&as_string(v)),
                None => out.push_str(&format!("%!{verb}(MISSING)")),
            },
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push_str("%!(NOVERB)"),
        }
    }
    out
}

impl<'a> Exec<'a> {
    fn lookup_var(&self, name: &str) -> Result<Value, String> {
        if name == "$" {
            return Ok(self.root.clone());
        }
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("undefined variable: {name}"))
    }

    fn field(&self, base: &Value, fields: &[String]) -> Result<Value, String> {
        let mut cur = base.clone();
        for (i, f) in fields.iter().enumerate() {
            cur = match &cur {
                Value::Object(map) => match map.get(f) {
                    Some(v) => v.clone(),
                    None => match self.mode {
                        Mode::Row => {
                            return Err(format!("can't evaluate field {f}"));
                        }
                        Mode::Header => Value::String(String::new()),
                        Mode::Lenient => Value::Null,
                    },
                },
                Value::Null if self.mode != Mode::Row => Value::Null,
                _ if self.mode == Mode::Header => {
                    let _ = i;
                    return Ok(cur);
                }
                _ => return Err(format!("can't evaluate field {f} in type {}", kind(&cur))),
            };
        }
        Ok(cur)
    }

    fn arg(&mut self, arg: &Arg, dot: &Value) -> Result<Value, String> {
        match arg {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(fields) => self.field(dot, fields),
            Arg::Var(name, fields) => {
                let v = self.lookup_var(name)?;
                self.field(&v, fields)
            }
            Arg::Str(s) => Ok(Value::String(s.clone())),
            Arg::Num(n, is_int) => Ok(if *is_int {
                serde_json::json!(*n as i64)
            } else {
                serde_json::json!(*n)
            }),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Nil => Ok(Value::Null),
            Arg::Ident(name) => self.call(name, &[], None, dot),
            Arg::Sub(pipe, fields) => {
                let v = self.pipeline(pipe, dot)?;
                self.field(&v, fields)
            }
        }
    }

    fn call(
        &mut self,
        name: &str,
        raw_args: &[Arg],
        piped: Option<Value>,
        dot: &Value,
    ) -> Result<Value, String> {
        // `and`/`or` short-circuit in Go; evaluating everything is equivalent here.
        let mut args = Vec::with_capacity(raw_args.len() + 1);
        for a in raw_args {
            args.push(self.arg(a, dot)?);
        }
        if let Some(p) = piped {
            args.push(p);
        }
        let want = |n: usize| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "wrong number of args for {name}: want {n} got {}",
                    args.len()
                ))
            }
        };
        let header_passthrough = self.mode == Mode::Header
            && matches!(
                name,
                "json" | "split" | "join" | "title" | "lower" | "upper" | "truncate"
            );
        if header_passthrough {
            return Ok(Value::String(
                args.first().map(as_string).unwrap_or_default(),
            ));
        }
        match name {
            "json" => {
                want(1)?;
                // Docker's contexts marshal with HTML escaping (json.Marshal); a
                // plain value goes through an encoder without it.
                let escape = self.mode == Mode::Row && args[0] == *self.root;
                Ok(Value::String(go_json(&args[0], escape)))
            }
            "join" => {
                want(2)?;
                let items = match &args[0] {
                    Value::Array(a) => a.iter().map(as_string).collect::<Vec<_>>(),
                    Value::Null => Vec::new(),
                    other => return Err(format!("join: expected a list, got {}", kind(other))),
                };
                Ok(Value::String(items.join(&as_string(&args[1]))))
            }
            "split" => {
                want(2)?;
                let s = as_string(&args[0]);
                let sep = as_string(&args[1]);
                let parts: Vec<Value> = if sep.is_empty() {
                    s.chars().map(|c| Value::String(c.to_string())).collect()
                } else {
                    s.split(sep.as_str())
                        .map(|p| Value::String(p.to_string()))
                        .collect()
                };
                Ok(Value::Array(parts))
            }
            "title" => {
                want(1)?;
                let s = as_string(&args[0]);
                let mut out = String::with_capacity(s.len());
                let mut prev_letter = false;
                for c in s.chars() {
                    if !prev_letter && c.is_alphabetic() {
                        out.extend(c.to_uppercase());
                    } else {
                        out.push(c);
                    }
                    prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
                }
                Ok(Value::String(out))
            }
            "lower" => {
                want(1)?;
                Ok(Value::String(as_string(&args[0]).to_lowercase()))
            }
            "upper" => {
                want(1)?;
                Ok(Value::String(as_string(&args[0]).to_uppercase()))
            }
            "pad" => {
                want(3)?;
                let s = as_string(&args[0]);
                if s.is_empty() {
                    return Ok(Value::String(s));
                }
                let pre = num(&args[1]).unwrap_or(0.0).max(0.0) as usize;
                let post = num(&args[2]).unwrap_or(0.0).max(0.0) as usize;
                Ok(Value::String(format!(
                    "{}{s}{}",
                    " ".repeat(pre),
                    " ".repeat(post)
                )))
            }
            "truncate" => {
                want(2)?;
                let s = as_string(&args[0]);
                let n = num(&args[1]).unwrap_or(0.0).max(0.0) as usize;
                if s.len() < n {
                    Ok(Value::String(s))
                } else {
                    let mut end = n;
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    Ok(Value::String(s[..end].to_string()))
                }
            }
            "len" => {
                want(1)?;
                let n = match &args[0] {
                    Value::String(s) => s.len(),
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    Value::Null => 0,
                    other => return Err(format!("len of {}", kind(other))),
                };
                Ok(serde_json::json!(n))
            }
            "index" => {
                if args.is_empty() {
                    return Err("wrong number of args for index".to_string());
                }
                let mut cur = args[0].clone();
                for key in &args[1..] {
                    cur = match (&cur, key) {
                        (Value::Array(a), k) => {
                            let i = num(k).ok_or("index of array needs a number")? as usize;
                            a.get(i)
                                .cloned()
                                .ok_or_else(|| format!("index out of range: {i}"))?
                        }
                        (Value::Object(o), k) => {
                            o.get(&as_string(k)).cloned().unwrap_or(Value::Null)
                        }
                        (Value::Null, _) => Value::Null,
                        (other, _) => {
                            return Err(format!("can't index item of type {}", kind(other)))
                        }
                    };
                }
                Ok(cur)
            }
            "eq" => {
                if args.len() < 2 {
                    return Err("missing argument for comparison".to_string());
                }
                Ok(Value::Bool(
                    args[1..].iter().any(|b| values_equal(&args[0], b)),
                ))
            }
            "ne" => {
                want(2)?;
                Ok(Value::Bool(!values_equal(&args[0], &args[1])))
            }
            "lt" | "le" | "gt" | "ge" => {
                want(2)?;
                let o = cmp_values(&args[0], &args[1])?;
                use std::cmp::Ordering::*;
                Ok(Value::Bool(match name {
                    "lt" => o == Less,
                    "le" => o != Greater,
                    "gt" => o == Greater,
                    _ => o != Less,
                }))
            }
            "not" => {
                want(1)?;
                Ok(Value::Bool(!truthy(&args[0])))
            }
            "and" => Ok(args
                .iter()
                .find(|v| !truthy(v))
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Null)),
            "or" => Ok(args
                .iter()
                .find(|v| truthy(v))
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Null)),
            "print" => Ok(Value::String(
                args.iter().map(as_string).collect::<Vec<_>>().join(""),
            )),
            "println" => Ok(Value::String(format!(
                "{}\n",
                args.iter().map(as_string).collect::<Vec<_>>().join(" ")
            ))),
            "printf" => {
                if args.is_empty() {
                    return Err("wrong number of args for printf".to_string());
                }
                Ok(Value::String(go_printf(&as_string(&args[0]), &args[1..])))
            }
            _ => Err(format!("function {name:?} not defined")),
        }
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &Value) -> Result<Value, String> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            let v = match &cmd[0] {
                Arg::Ident(name) => self.call(name, &cmd[1..], value.take(), dot)?,
                first => {
                    if cmd.len() > 1 || value.is_some() {
                        return Err("can't give argument to non-function".to_string());
                    }
                    self.arg(first, dot)?
                }
            };
            value = Some(v);
        }
        let v = value.unwrap_or(Value::Null);
        if let Some(name) = pipe.decl.last() {
            self.vars.push((name.clone(), v.clone()));
        }
        Ok(v)
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Value) -> Result<(), String> {
        for n in nodes {
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipeline(pipe, dot)?;
                    if pipe.decl.is_empty() {
                        self.out.push_str(&go_print(&v));
                    }
                }
                Node::If(branches, else_body) => {
                    let mark = self.vars.len();
                    let mut done = false;
                    for (cond, body) in branches {
                        let v = self.pipeline(cond, dot)?;
                        if truthy(&v) {
                            self.nodes(body, dot)?;
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        self.nodes(else_body, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::With(pipe, body, else_body) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    if truthy(&v) {
                        self.nodes(body, &v)?;
                    } else {
                        self.nodes(else_body, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::Range(pipe, body, else_body) => {
                    let mark = self.vars.len();
                    let decl = pipe.decl.clone();
                    let plain = Pipeline {
                        decl: Vec::new(),
                        cmds: pipe.cmds.clone(),
                    };
                    let v = self.pipeline(&plain, dot)?;
                    let items: Vec<(Value, Value)> = match &v {
                        Value::Array(a) => a
                            .iter()
                            .enumerate()
                            .map(|(i, x)| (serde_json::json!(i), x.clone()))
                            .collect(),
                        Value::Object(o) => {
                            let mut keys: Vec<&String> = o.keys().collect();
                            keys.sort();
                            keys.into_iter()
                                .map(|k| (Value::String(k.clone()), o[k.as_str()].clone()))
                                .collect()
                        }
                        Value::Null => Vec::new(),
                        Value::Number(n) => (0..n.as_u64().unwrap_or(0))
                            .map(|i| (serde_json::json!(i), serde_json::json!(i)))
                            .collect(),
                        other => {
                            return Err(format!("range can't iterate over {}", go_print(other)))
                        }
                    };
                    if items.is_empty() {
                        self.nodes(else_body, dot)?;
                    }
                    for (key, item) in items {
                        let inner = self.vars.len();
                        match decl.len() {
                            0 => {}
                            1 => self.vars.push((decl[0].clone(), item.clone())),
                            _ => {
                                self.vars.push((decl[0].clone(), key));
                                self.vars.push((decl[1].clone(), item.clone()));
                            }
                        }
                        self.nodes(body, &item)?;
                        self.vars.truncate(inner);
                    }
                    self.vars.truncate(mark);
                }
            }
        }
        Ok(())
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

impl Template {
    /// Parses template text.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parser = Parser {
            pieces: lex(src)?,
            pos: 0,
        };
        let (nodes, stop) = parser.list()?;
        match stop {
            Stop::Eof => Ok(Template { nodes }),
            Stop::End => Err("unexpected {{end}}".to_string()),
            Stop::Else(_) => Err("unexpected {{else}}".to_string()),
        }
    }

    /// Executes on a docker-style context row (`header` = the table header map).
    pub fn execute(&self, data: &Value, header: bool) -> Result<String, String> {
        self.run(data, if header { Mode::Header } else { Mode::Row })
    }

    /// Executes on decoded JSON, where unknown fields print `<no value>`.
    pub fn execute_lenient(&self, data: &Value) -> Result<String, String> {
        self.run(data, Mode::Lenient)
    }

    fn run(&self, data: &Value, mode: Mode) -> Result<String, String> {
        let mut exec = Exec {
            root: data,
            vars: Vec::new(),
            mode,
            out: String::new(),
        };
        exec.nodes(&self.nodes, data)?;
        Ok(exec.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(t: &str, data: &Value) -> String {
        Template::parse(t).unwrap().execute(data, false).unwrap()
    }

    #[test]
    fn fields_and_text() {
        let d = json!({"ID": "abc", "Name": "web", "Spec": {"Name": "x"}});
        assert_eq!(run("{{.ID}}: {{.Name}}", &d), "abc: web");
        assert_eq!(
            Template::parse("{{.Spec.Name}}")
                .unwrap()
                .execute_lenient(&d)
                .unwrap(),
            "x"
        );
        assert_eq!(
            Template::parse("{{.Nope}}")
                .unwrap()
                .execute_lenient(&d)
                .unwrap(),
            "<no value>"
        );
        assert!(Template::parse("{{.Nope}}")
            .unwrap()
            .execute(&d, false)
            .is_err());
    }

    #[test]
    fn json_function_sorts_keys_and_escapes_contexts() {
        let d = json!({"Ports": "*:80->80/tcp", "ID": "x", "Labels": {"b": "2", "a": "1"}});
        assert_eq!(
            run("{{json .}}", &d),
            r#"{"ID":"x","Labels":{"a":"1","b":"2"},"Ports":"*:80-\u003e80/tcp"}"#
        );
        assert_eq!(run("{{json .Ports}}", &d), r#""*:80->80/tcp""#);
        assert_eq!(run("{{json .Labels}}", &d), r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn conditionals_and_trim() {
        let t = "{{.ID}} {{if .Self}}*{{else}} {{ end }}|";
        assert_eq!(run(t, &json!({"ID": "n1", "Self": true})), "n1 *|");
        assert_eq!(run(t, &json!({"ID": "n1", "Self": false})), "n1  |");
        let t = "a   {{- if eq .X \"y\" }} yes {{- else if .Z }} z {{- else -}} no {{- end }}";
        assert_eq!(run(t, &json!({"X": "y", "Z": false})), "a yes");
        assert_eq!(run(t, &json!({"X": "n", "Z": true})), "a z");
        assert_eq!(run(t, &json!({"X": "n", "Z": false})), "ano");
    }

    #[test]
    fn range_with_and_variables() {
        let d =
            json!({"Env": ["A=1", "B=2"], "Labels": {"z": "1", "a": ""}, "Spec": {"Name": "web"}});
        assert_eq!(run("{{range .Env}}[{{.}}]{{end}}", &d), "[A=1][B=2]");
        assert_eq!(
            run("{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}", &d),
            "a=;z=1;"
        );
        assert_eq!(run("{{with .Spec}}{{.Name}}{{end}}", &d), "web");
        assert_eq!(
            run("{{$n := .Spec.Name}}{{$n}}-{{$.Spec.Name}}", &d),
            "web-web"
        );
        assert_eq!(
            run(
                "{{range .Missing}}x{{else}}none{{end}}",
                &json!({"Missing": []})
            ),
            "none"
        );
    }

    #[test]
    fn functions_and_pipelines() {
        let d = json!({"Name": "Web", "Env": ["A=1", "B=2"], "N": 3});
        assert_eq!(run("{{.Name | upper}}", &d), "WEB");
        assert_eq!(run("{{lower .Name}}", &d), "web");
        assert_eq!(run("{{join .Env \",\"}}", &d), "A=1,B=2");
        assert_eq!(run("{{len .Env}}", &d), "2");
        assert_eq!(run("{{index .Env 1}}", &d), "B=2");
        assert_eq!(run("{{truncate .Name 2}}", &d), "We");
        assert_eq!(run("{{pad .Name 1 2}}|", &d), " Web  |");
        assert_eq!(run("{{printf \"%s-%d\" .Name .N}}", &d), "Web-3");
        assert_eq!(run("{{(index .Env 0) | lower}}", &d), "a=1");
        assert_eq!(run("{{if gt .N 2}}big{{end}}", &d), "big");
        assert_eq!(run("{{title \"hello world\"}}", &d), "Hello World");
        assert_eq!(run("{{.Env}}", &d), "[A=1 B=2]");
    }

    #[test]
    fn header_mode_passes_titles_through() {
        let t = Template::parse("{{.ID}}\t{{json .Name}}\t{{upper .Name}}").unwrap();
        let h = json!({"ID": "ID", "Name": "NAME"});
        assert_eq!(t.execute(&h, true).unwrap(), "ID\tNAME\tNAME");
    }

    #[test]
    fn parse_errors() {
        assert!(Template::parse("{{.ID").is_err());
        assert!(Template::parse("{{if .X}}").is_err());
        assert!(Template::parse("{{end}}").is_err());
        assert!(Template::parse("{{nosuchfunc .X}}")
            .unwrap()
            .execute(&json!({"X": 1}), false)
            .is_err());
    }
}
