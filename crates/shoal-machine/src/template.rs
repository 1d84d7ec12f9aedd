//! The small subset of Go templates that `machine inspect --format` and `machine ls --format`
//! accept: text with `{{.Field.Path}}` lookups into a JSON value, optionally through `json` or
//! `prettyjson` (`{{json .Driver}}`), values printed the way Go prints them; plus the
//! `text/tabwriter` alignment (`table` formats of `ls`).

use serde_json::Value;

use crate::MachineError;

/// How an action prints its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Print,
    Json,
    PrettyJson,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Action { func: Func, path: Vec<String> },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

fn unsupported(action: &str) -> MachineError {
    MachineError::Template(format!(
        "unsupported action {{{{{action}}}}}: only {{{{.Field.Path}}}}, {{{{json .Path}}}} and {{{{prettyjson .Path}}}} are supported"
    ))
}

fn parse_path(word: &str, action: &str) -> Result<Vec<String>, MachineError> {
    if word == "." {
        return Ok(Vec::new());
    }
    let rest = word.strip_prefix('.').ok_or_else(|| unsupported(action))?;
    let path: Vec<String> = rest.split('.').map(str::to_string).collect();
    let ident = |s: &String| {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_alphabetic() || f == '_')
            && c.all(|x| x.is_alphanumeric() || x == '_')
    };
    if path.iter().all(ident) {
        Ok(path)
    } else {
        Err(unsupported(action))
    }
}

impl Template {
    /// Parses `text`; an unclosed `{{` or an action outside the subset is an error.
    pub fn parse(text: &str) -> Result<Template, MachineError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| MachineError::Template("unclosed action: missing \"}}\"".into()))?;
            let action = &after[..close];
            let words: Vec<&str> = action.split_whitespace().collect();
            let piece = match words.as_slice() {
                [path] => Piece::Action {
                    func: Func::Print,
                    path: parse_path(path, action)?,
                },
                ["json", path] => Piece::Action {
                    func: Func::Json,
                    path: parse_path(path, action)?,
                },
                ["prettyjson", path] => Piece::Action {
                    func: Func::PrettyJson,
                    path: parse_path(path, action)?,
                },
                _ => return Err(unsupported(action)),
            };
            pieces.push(piece);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    /// Renders the template against `data`.
    pub fn render(&self, data: &Value) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Action { func, path } => {
                    let v = path.iter().try_fold(data, |v, k| v.get(k));
                    match (func, v) {
                        (Func::Print, None | Some(Value::Null)) => out.push_str("<no value>"),
                        (Func::Print, Some(v)) => out.push_str(&go_print(v)),
                        (Func::Json, v) => out.push_str(
                            &serde_json::to_string(v.unwrap_or(&Value::Null)).unwrap_or_default(),
                        ),
                        (Func::PrettyJson, v) => {
                            out.push_str(&pretty_json(v.unwrap_or(&Value::Null)))
                        }
                    }
                }
            }
        }
        out
    }
}

/// JSON with a four-space indent, as docker-machine prints it.
pub fn pretty_json(v: &Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// A value as Go's `fmt` prints what `encoding/json` decoded: `map[k:v ...]`, `[a b]`, `<nil>`.
fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Aligns tab-separated cells as Go's `tabwriter.NewWriter(w, 5, 1, 3, ' ', 0)` does: every
/// tab-terminated cell is padded to its column's widest cell plus three spaces (at least five);
/// the last cell of a line is not aligned. Trailing blanks are trimmed.
pub fn align_tabs(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let columns = rows
        .iter()
        .map(|r| r.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|r| r.len() > c + 1)
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(5)
        })
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_looked_up_and_printed_like_go() {
        let data = json!({
            "Name": "m1",
            "Driver": {"IPAddress": "10.97.0.2", "CPU": 2, "Labels": ["a", "b"], "Env": null},
            "Flag": true,
        });
        let t = Template::parse("{{.Name}} {{ .Driver.IPAddress }} {{.Driver.CPU}}").unwrap();
        assert_eq!(t.render(&data), "m1 10.97.0.2 2");
        let t = Template::parse("{{.Driver.Labels}}|{{.Flag}}|{{.Nope}}|{{.Driver.Env}}").unwrap();
        assert_eq!(t.render(&data), "[a b]|true|<no value>|<no value>");
        let t = Template::parse("{{.Driver}}").unwrap();
        assert_eq!(
            t.render(&data),
            "map[CPU:2 Env:<nil> IPAddress:10.97.0.2 Labels:[a b]]"
        );
        assert_eq!(Template::parse("plain").unwrap().render(&data), "plain");
    }

    #[test]
    fn json_functions_print_json() {
        let data = json!({"Driver": {"IPAddress": "10.97.0.2", "CPU": 2}});
        let t = Template::parse("{{json .Driver}}").unwrap();
        assert_eq!(t.render(&data), r#"{"CPU":2,"IPAddress":"10.97.0.2"}"#);
        let t = Template::parse("{{prettyjson .Driver}}").unwrap();
        assert_eq!(
            t.render(&data),
            "{\n    \"CPU\": 2,\n    \"IPAddress\": \"10.97.0.2\"\n}"
        );
    }

    #[test]
    fn unsupported_actions_are_errors() {
        for bad in [
            "{{.Name",
            "{{if .Name}}x{{end}}",
            "{{Name}}",
            "{{.Driver..IP}}",
            "{{printf \"%s\" .Name}}",
            "{{}}",
        ] {
            assert!(
                matches!(Template::parse(bad), Err(MachineError::Template(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn tab_alignment_pads_columns_to_the_widest_cell_plus_three() {
        let out = align_tabs("NAME\tA\tSTATE\nmyvm1\t*\tRunning\n");
        assert_eq!(out, "NAME    A    STATE\nmyvm1   *    Running\n");
        // A trailing empty cell leaves no trailing blanks.
        assert_eq!(align_tabs("ab\t\n"), "ab\n");
    }
}
