//! The error type of the compose loader: every error names the file and, when it is known, the
//! line and the key path it is about, as `docker-compose.yml:12: services.web.image: ...`.

use std::fmt;

/// An error found while reading, interpolating, merging or checking compose files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeError {
    /// The name of the compose file the error is in (`<stdin>` for standard input), if any.
    pub file: Option<String>,
    /// The 1-based line in `file`, if known.
    pub line: Option<usize>,
    /// The dotted key path the error is about (`services.web.image`), empty if none.
    pub path: String,
    /// The message, without the `file:line: ` prefix.
    pub message: String,
}

impl ComposeError {
    /// An error about no file in particular.
    pub fn plain(message: impl Into<String>) -> Self {
        ComposeError {
            file: None,
            line: None,
            path: String::new(),
            message: message.into(),
        }
    }

    /// An error about a whole file.
    pub fn in_file(file: &str, message: impl Into<String>) -> Self {
        ComposeError {
            file: Some(file.to_string()),
            line: None,
            path: String::new(),
            message: message.into(),
        }
    }

    /// An error at a line of a file, about a key path (the message already names the path when
    /// it needs to).
    pub fn at(file: &str, line: Option<usize>, path: &str, message: impl Into<String>) -> Self {
        ComposeError {
            file: Some(file.to_string()),
            line,
            path: path.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: {}", self.message),
            (Some(file), None) => write!(f, "{file}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ComposeError {}

/// The path component standing for item `i` of a list (`[3]`), as kept in key paths.
pub fn index_component(i: usize) -> String {
    format!("[{i}]")
}

/// If `component` stands for a list item, its index.
pub fn component_index(component: &str) -> Option<usize> {
    component
        .strip_prefix('[')
        .and_then(|c| c.strip_suffix(']'))
        .and_then(|c| c.parse().ok())
}

/// Joins a key path the way Docker prints it in interpolation errors: list items are `[]`
/// (`services.web.volumes.[]`).
pub fn docker_path(path: &[String]) -> String {
    path.iter()
        .map(|p| match component_index(p) {
            Some(_) => "[]",
            None => p.as_str(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Joins a key path with list items as their index (`services.web.ports.0.published`).
pub fn dotted_path(path: &[String]) -> String {
    path.iter()
        .map(|p| match component_index(p) {
            Some(i) => i.to_string(),
            None => p.clone(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn display_names_file_and_line() {
        let e = ComposeError::at("a.yml", Some(3), "services", "services must be a mapping");
        assert_eq!(e.to_string(), "a.yml:3: services must be a mapping");
        let e = ComposeError::in_file("a.yml", "Top-level object must be a mapping");
        assert_eq!(e.to_string(), "a.yml: Top-level object must be a mapping");
        assert_eq!(ComposeError::plain("boom").to_string(), "boom");
    }

    #[test]
    fn paths_print_list_items() {
        let p = path(&["services", "web", "volumes", "[2]", "source"]);
        assert_eq!(docker_path(&p), "services.web.volumes.[].source");
        assert_eq!(dotted_path(&p), "services.web.volumes.2.source");
        assert_eq!(component_index("[12]"), Some(12));
        assert_eq!(component_index("12"), None);
    }
}
