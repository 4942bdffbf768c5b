//! CoRE link format (`application/link-format`, content format 40; RFC 6690) as LwM2M uses it
//! in registration payloads and discover answers: parsing and printing `Link`s. Knows nothing
//! of what the links mean to the registration interface.

use std::fmt;

use super::{ContentError, ContentFormat, LwM2mPath};

/// Attributes printed as quoted strings even when their value is a plain token.
const QUOTED_ATTRIBUTES: [&str; 4] = ["rt", "if", "anchor", "title"];

/// One link: `<target>;name=value;flag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The URI reference between `<` and `>`, e.g. `/3/0`.
    pub target: String,
    /// The attributes in order; quoted values are stored unquoted and unescaped.
    pub attributes: Vec<(String, Option<String>)>,
}

impl Link {
    /// A link to `target` with no attributes.
    pub fn new(target: impl Into<String>) -> Self {
        Link {
            target: target.into(),
            attributes: Vec::new(),
        }
    }

    /// The value of the first attribute called `name`; `Some("")` for a flag with no value.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_deref().unwrap_or_default())
    }

    /// The LwM2M object, instance or resource the target names; `None` for the root `</>` and
    /// for targets that are not LwM2M paths (such as an alternate path `</lwm2m>`).
    pub fn path(&self) -> Option<LwM2mPath> {
        self.path_under("")
    }

    /// Like [`Link::path`] for a client that registered an alternate root path such as
    /// `/lwm2m`: the target must start with `root` and the rest must be an LwM2M path.
    pub fn path_under(&self, root: &str) -> Option<LwM2mPath> {
        let rest = self.target.strip_prefix(root.trim_end_matches('/'))?;
        let path: LwM2mPath = rest.parse().ok()?;
        (path.depth() > 0).then_some(path)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.target)?;
        for (name, value) in &self.attributes {
            write!(f, ";{name}")?;
            match value {
                Some(value) if needs_quotes(name, value) => {
                    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                    write!(f, "=\"{escaped}\"")?;
                }
                Some(value) => write!(f, "={value}")?,
                None => {}
            }
        }
        Ok(())
    }
}

fn needs_quotes(name: &str, value: &str) -> bool {
    QUOTED_ATTRIBUTES.contains(&name) || value.is_empty() || !value.chars().all(is_ptoken_char)
}

/// RFC 6690 `ptokenchar`.
fn is_ptoken_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'()*+-./:<=>?@[]^_`{|}~".contains(c)
}

/// RFC 8288 `parmname` characters (and `*` for extended names).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$&+-.^_`|~*".contains(c)
}

/// Parses a link-format payload. An empty (or all-whitespace) payload has no links; whitespace
/// around `,`, `;` and `=` is tolerated; quoted values may hold `,`, `;` and `\`-escapes.
pub fn parse_links(text: &str) -> Result<Vec<Link>, ContentError> {
    let mut parser = Parser { text, pos: 0 };
    let mut links = Vec::new();
    parser.skip_whitespace();
    if parser.at_end() {
        return Ok(links);
    }
    loop {
        links.push(parser.link()?);
        parser.skip_whitespace();
        if parser.at_end() {
            return Ok(links);
        }
        parser.expect(',', "',' between links or ';' before an attribute")?;
        parser.skip_whitespace();
    }
}

/// Prints links as a link-format payload, separated by `,`.
pub fn format_links(links: &[Link]) -> String {
    let parts: Vec<String> = links.iter().map(Link::to_string).collect();
    parts.join(",")
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn link(&mut self) -> Result<Link, ContentError> {
        self.expect('<', "'<' opening a link")?;
        let target = self.take_while(|c| c != '>' && c != '<' && !c.is_whitespace());
        self.expect('>', "'>' closing the link target")?;
        let mut link = Link::new(target);
        loop {
            self.skip_whitespace();
            if !self.eat(';') {
                return Ok(link);
            }
            self.skip_whitespace();
            link.attributes.push(self.attribute()?);
        }
    }

    fn attribute(&mut self) -> Result<(String, Option<String>), ContentError> {
        let name = self.take_while(is_name_char);
        if name.is_empty() {
            return Err(self.unexpected("an attribute name"));
        }
        self.skip_whitespace();
        if !self.eat('=') {
            return Ok((name.to_owned(), None));
        }
        self.skip_whitespace();
        let value = if self.eat('"') {
            self.quoted()?
        } else {
            let token = self.take_while(|c| !",;\"".contains(c) && !c.is_whitespace());
            if token.is_empty() {
                return Err(self.unexpected("a value after '='"));
            }
            token.to_owned()
        };
        Ok((name.to_owned(), Some(value)))
    }

    /// Reads the rest of a quoted string whose opening `"` was just eaten.
    fn quoted(&mut self) -> Result<String, ContentError> {
        let start = self.pos - 1;
        let mut value = String::new();
        loop {
            match self.bump() {
                Some('"') => return Ok(value),
                Some('\\') => match self.bump() {
                    Some(c) => value.push(c),
                    None => break,
                },
                Some(c) => value.push(c),
                None => break,
            }
        }
        self.pos = start;
        Err(self.error("unterminated quoted string".into()))
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or_default()
    }

    fn at_end(&self) -> bool {
        self.rest().is_empty()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.rest().chars().next()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, expected: char) -> bool {
        let found = self.rest().starts_with(expected);
        if found {
            self.pos += expected.len_utf8();
        }
        found
    }

    fn expect(&mut self, expected: char, what: &str) -> Result<(), ContentError> {
        match self.eat(expected) {
            true => Ok(()),
            false => Err(self.unexpected(what)),
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c| !keep(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    fn skip_whitespace(&mut self) {
        self.take_while(char::is_whitespace);
    }

    fn unexpected(&self, what: &str) -> ContentError {
        let found = match self.rest().chars().next() {
            Some(c) => format!("{c:?}"),
            None => "the end".to_owned(),
        };
        self.error(format!("expected {what}, found {found}"))
    }

    fn error(&self, reason: String) -> ContentError {
        ContentError::Malformed {
            format: ContentFormat::LinkFormat,
            offset: self.pos,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRATION: &str = r#"</>;rt="oma.lwm2m";ct=11543,</1/0>,</3/0>,</5/0>;ver=1.1,</4>"#;

    #[test]
    fn parses_a_registration_payload() {
        let links = parse_links(REGISTRATION).unwrap();
        let targets: Vec<&str> = links.iter().map(|l| l.target.as_str()).collect();
        assert_eq!(targets, ["/", "/1/0", "/3/0", "/5/0", "/4"]);
        assert_eq!(links[0].attribute("rt"), Some("oma.lwm2m"));
        assert_eq!(links[0].attribute("ct"), Some("11543"));
        assert_eq!(links[0].attribute("ver"), None);
        assert_eq!(links[3].attribute("ver"), Some("1.1"));
        assert_eq!(links[0].path(), None);
        assert_eq!(links[2].path(), Some(LwM2mPath::instance(3, 0)));
        assert_eq!(links[4].path(), Some(LwM2mPath::object(4)));
        assert_eq!(format_links(&links), REGISTRATION);
    }

    #[test]
    fn quoting_whitespace_flags_and_alternate_paths() {
        let text = " </lwm2m> ; rt = \"oma.lwm2m\" ,\n</lwm2m/3/0>;title=\"a, b; \\\"c\\\"\";obs ; ct=\"60 110\" ";
        let links = parse_links(text).unwrap();
        assert_eq!(links.len(), 2);
        assert_eq!(links[1].attribute("title"), Some("a, b; \"c\""));
        assert_eq!(links[1].attribute("obs"), Some(""));
        assert_eq!(links[1].attribute("ct"), Some("60 110"));
        assert_eq!(links[0].path(), None);
        assert_eq!(links[1].path(), None);
        assert_eq!(
            links[1].path_under("/lwm2m"),
            Some(LwM2mPath::instance(3, 0))
        );
        assert_eq!(links[0].path_under("/lwm2m/"), None);
        let printed = format_links(&links);
        assert_eq!(
            printed,
            r#"</lwm2m>;rt="oma.lwm2m",</lwm2m/3/0>;title="a, b; \"c\"";obs;ct="60 110""#
        );
        assert_eq!(parse_links(&printed).unwrap(), links);
    }

    #[test]
    fn empty_payloads_have_no_links() {
        assert_eq!(parse_links("").unwrap(), vec![]);
        assert_eq!(parse_links(" \n ").unwrap(), vec![]);
        assert_eq!(format_links(&[]), "");
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let cases = [
            (
                "</1/0",
                "byte 5: expected '>' closing the link target, found the end",
            ),
            ("1/0>", "byte 0: expected '<' opening a link, found '1'"),
            (
                "</1/0>;",
                "byte 7: expected an attribute name, found the end",
            ),
            (
                "</1/0>, ",
                "byte 8: expected '<' opening a link, found the end",
            ),
            ("</1/0>;rt=\"abc", "byte 10: unterminated quoted string"),
            ("</1/0>;=x", "expected an attribute name, found '='"),
            ("</1/0>;ct=", "expected a value after '='"),
            (
                "</1/0> </3/0>",
                "byte 7: expected ',' between links or ';' before an attribute",
            ),
            ("</1 /0>", "expected '>'"),
            ("</1/0>;ct=1\"x\"", "found '\"'"),
        ];
        for (text, expected) in cases {
            let message = parse_links(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
            assert!(message.starts_with("malformed application/link-format payload"));
        }
    }

    #[test]
    fn random_and_mutated_payloads_never_panic() {
        use rand::{Rng, SeedableRng, rngs::SmallRng};
        let mut rng = SmallRng::seed_from_u64(40);
        let alphabet: Vec<char> = "<>;,=\"\\ /0é1ab".chars().collect();
        for round in 0..6000 {
            let text: String = if round % 2 == 0 {
                let len = rng.random_range(0..48);
                let bytes: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                let mut chars: Vec<char> = REGISTRATION.chars().collect();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..chars.len());
                    chars[at] = alphabet[rng.random_range(0..alphabet.len())];
                }
                chars.truncate(rng.random_range(0..=chars.len()));
                chars.into_iter().collect()
            };
            if let Ok(links) = parse_links(&text) {
                let reparsed = parse_links(&format_links(&links)).unwrap();
                assert_eq!(reparsed, links, "{text}");
                let _ = links.iter().map(Link::path).count();
            }
        }
    }
}
