//! Filters that make registry data (tags, metadata, anything a container's
//! labels or a deployer wrote) safe to put in a proxy's configuration as
//! one quoted argument: `{{ i.metadata.version|nginx }}`,
//! `{{ i.metadata.version|haproxy }}`. Without them a value such as
//! `1; return 302 http://elsewhere` ends the directive and adds its own.

/// One nginx argument: double-quoted, with `\` and `"` escaped. Control
/// characters (a newline ends nothing inside quotes, but no header or
/// path holds one) and `$` (nginx would expand it as a variable, e.g.
/// `$http_authorization`) are left out.
pub fn nginx(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '$' => {}
            c if c.is_control() => {}
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// One HAProxy argument: double-quoted, with `\`, `"`, `'`, `$` (an
/// environment variable inside double quotes) and `#` escaped; control
/// characters left out.
pub fn haproxy(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' | '\'' | '$' | '#' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => {}
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_one_quoted_argument() {
        assert_eq!(nginx("v1.2"), r#""v1.2""#);
        assert_eq!(
            nginx("1\"; return 302 http://x/; add_header A \"$http_cookie\\"),
            r#""1\"; return 302 http://x/; add_header A \"http_cookie\\""#
        );
        assert_eq!(nginx("a\nb\r\tc"), r#""abc""#);
        assert_eq!(haproxy("v1.2"), r#""v1.2""#);
        assert_eq!(haproxy("x\" # ${HOME}'\\\n"), r#""x\" \# \${HOME}\'\\""#);
    }
}
