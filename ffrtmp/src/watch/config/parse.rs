//! Reading a file: format by extension, the strict parse with line, column and key path.

use super::*;

/// Nothing but whitespace, `#` comments and YAML document markers (`---`,
/// `...`), which YAML and TOML both read as an empty document.
pub(super) fn is_blank(text: &str) -> bool {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().map(str::trim).all(|line| {
        let line = ["---", "..."]
            .iter()
            .find_map(|marker| line.strip_prefix(marker))
            .map_or(line, str::trim_start);
        line.is_empty() || line.starts_with('#')
    })
}

/// Parse the text of `file`: TOML when its name ends in `.toml`, else YAML.
pub(super) fn parse(text: &str, file: &Path) -> Result<FileConfig, ConfigError> {
    let is_toml = file
        .extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("toml"));
    if is_toml {
        parse_toml(text, file)
    } else {
        parse_yaml(text, file)
    }
}

pub(super) fn parse_yaml(text: &str, file: &Path) -> Result<FileConfig, ConfigError> {
    serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(text)).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        let message = yaml_message(&inner, &key);
        invalid(file, location, &key, &message)
    })
}

/// serde_norway's message without what we print ourselves: the location
/// (at its end, or before a syntax error's context) and its own key path
/// (sometimes the parent's) in front.
pub(super) fn yaml_message(error: &serde_norway::Error, key: &str) -> String {
    let mut full = error.to_string();
    if let Some(l) = error.location() {
        full = full.replacen(&format!(" at line {} column {}", l.line(), l.column()), "", 1);
    }
    let message = full.as_str();
    // The key and each of its ancestors, longest first.
    let cuts = key
        .char_indices()
        .filter(|&(_, c)| c == '.' || c == '[')
        .map(|(i, _)| i);
    let mut prefixes: Vec<&str> = cuts.map(|i| &key[..i]).collect();
    prefixes.push(key);
    for prefix in prefixes.iter().rev().filter(|p| !p.is_empty()) {
        if let Some(rest) = message.strip_prefix(prefix).and_then(|r| r.strip_prefix(": ")) {
            return rest.to_string();
        }
    }
    message.to_string()
}

pub(super) fn parse_toml(text: &str, file: &Path) -> Result<FileConfig, ConfigError> {
    let located = |e: &toml::de::Error, key: &str| {
        let location = e.span().map(|span| line_column(text, span.start));
        invalid(file, location, key, e.message())
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| located(&e, ""))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        located(e.inner(), &key)
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

pub(super) fn invalid(file: &Path, location: Option<(usize, usize)>, key: &str, message: &str) -> ConfigError {
    // serde_path_to_error writes "." for the document itself and "?" for a
    // key a syntax error stopped it from reading.
    let key = key.trim_end_matches(".?");
    let key = (!key.is_empty() && key != "." && key != "?").then(|| key.to_string());
    ConfigError::Invalid {
        file: file.to_owned(),
        location,
        key,
        message: message.replace('\n', " "),
    }
}
