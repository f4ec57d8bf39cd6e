//! A GraphQL executable-document parser (October 2021 specification): operations, variables,
//! fields with aliases and arguments, fragments and directives. Type system definitions are
//! not accepted: `/graphql` serves a fixed schema. Nesting is bounded so that a hostile
//! document cannot exhaust the stack.

use std::fmt;

/// How deep selections, lists and objects may nest.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Var(String),
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Enum(String),
    List(Vec<Val>),
    Obj(Vec<(String, Val)>),
}

#[derive(Clone, Debug)]
pub struct Directive {
    pub name: String,
    pub args: Vec<(String, Val)>,
}

#[derive(Clone, Debug)]
pub struct Field {
    pub alias: Option<String>,
    pub name: String,
    pub args: Vec<(String, Val)>,
    pub directives: Vec<Directive>,
    pub selection: Vec<Sel>,
}

impl Field {
    /// The key of this field in the response.
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Clone, Debug)]
pub enum Sel {
    Field(Field),
    Spread {
        name: String,
        directives: Vec<Directive>,
    },
    Inline {
        on: Option<String>,
        directives: Vec<Directive>,
        selection: Vec<Sel>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Query,
    Mutation,
    Subscription,
}

#[derive(Clone, Debug)]
pub struct VarDef {
    pub name: String,
    pub non_null: bool,
    pub default: Option<Val>,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub kind: OpKind,
    pub name: Option<String>,
    pub vars: Vec<VarDef>,
    pub selection: Vec<Sel>,
}

#[derive(Clone, Debug)]
pub struct Fragment {
    pub name: String,
    pub on: String,
    pub selection: Vec<Sel>,
}

#[derive(Clone, Debug, Default)]
pub struct Document {
    pub operations: Vec<Operation>,
    pub fragments: Vec<Fragment>,
}

/// A syntax error with its line and column (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "syntax error at {}:{}: {}",
            self.line, self.column, self.message
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Punct(char),
    Spread,
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
    End,
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    tok: Tok,
    /// Where the current token starts.
    at: usize,
    depth: usize,
}

pub fn parse(src: &str) -> Result<Document, SyntaxError> {
    let mut p = Parser {
        src,
        pos: 0,
        tok: Tok::End,
        at: 0,
        depth: 0,
    };
    p.advance()?;
    let mut doc = Document::default();
    while p.tok != Tok::End {
        match &p.tok {
            Tok::Punct('{') => {
                let selection = p.selection_set()?;
                doc.operations.push(Operation {
                    kind: OpKind::Query,
                    name: None,
                    vars: vec![],
                    selection,
                });
            }
            Tok::Name(n) if n == "fragment" => {
                p.advance()?;
                let name = p.name()?;
                if name == "on" {
                    return Err(p.error("a fragment cannot be named \"on\""));
                }
                p.keyword("on")?;
                let on = p.name()?;
                p.directives()?;
                let selection = p.selection_set()?;
                doc.fragments.push(Fragment {
                    name,
                    on,
                    selection,
                });
            }
            Tok::Name(n) if ["query", "mutation", "subscription"].contains(&n.as_str()) => {
                let kind = match n.as_str() {
                    "query" => OpKind::Query,
                    "mutation" => OpKind::Mutation,
                    _ => OpKind::Subscription,
                };
                p.advance()?;
                let name = match &p.tok {
                    Tok::Name(_) => Some(p.name()?),
                    _ => None,
                };
                let vars = if p.tok == Tok::Punct('(') {
                    p.var_defs()?
                } else {
                    vec![]
                };
                p.directives()?;
                let selection = p.selection_set()?;
                doc.operations.push(Operation {
                    kind,
                    name,
                    vars,
                    selection,
                });
            }
            _ => {
                return Err(p.error(
                    "expected an operation (query, mutation, { … }) or a fragment definition",
                ));
            }
        }
    }
    Ok(doc)
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> SyntaxError {
        let before = &self.src[..self.at.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SyntaxError {
            message: message.into(),
            line,
            column,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    /// Reads the next token into `self.tok`.
    fn advance(&mut self) -> Result<(), SyntaxError> {
        // Ignored: white space, line terminators, commas, comments and a byte order mark.
        loop {
            match self.peek_char() {
                Some(c) if c.is_whitespace() || c == ',' || c == '\u{feff}' => {
                    self.pos += c.len_utf8();
                }
                Some('#') => {
                    while let Some(c) = self.peek_char() {
                        if c == '\n' || c == '\r' {
                            break;
                        }
                        self.pos += c.len_utf8();
                    }
                }
                _ => break,
            }
        }
        self.at = self.pos;
        let Some(c) = self.peek_char() else {
            self.tok = Tok::End;
            return Ok(());
        };
        self.tok = match c {
            '!' | '$' | '&' | '(' | ')' | ':' | '=' | '@' | '[' | ']' | '{' | '|' | '}' => {
                self.pos += 1;
                Tok::Punct(c)
            }
            '.' => {
                if self.src[self.pos..].starts_with("...") {
                    self.pos += 3;
                    Tok::Spread
                } else {
                    return Err(self.error("unexpected \".\""));
                }
            }
            '"' => Tok::Str(self.string()?),
            c if c == '_' || c.is_ascii_alphabetic() => {
                let start = self.pos;
                while let Some(c) = self.peek_char() {
                    if c == '_' || c.is_ascii_alphanumeric() {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                Tok::Name(self.src[start..self.pos].to_owned())
            }
            c if c == '-' || c.is_ascii_digit() => self.number()?,
            other => return Err(self.error(format!("unexpected character {other:?}"))),
        };
        Ok(())
    }

    fn number(&mut self) -> Result<Tok, SyntaxError> {
        let start = self.pos;
        let mut float = false;
        if self.peek_char() == Some('-') {
            self.pos += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.pos;
            while p.peek_char().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            p.pos > s
        };
        if !digits(self) {
            return Err(self.error("a number needs digits"));
        }
        if self.peek_char() == Some('.') {
            self.pos += 1;
            float = true;
            if !digits(self) {
                return Err(self.error("a number needs digits after the point"));
            }
        }
        if matches!(self.peek_char(), Some('e' | 'E')) {
            self.pos += 1;
            float = true;
            if matches!(self.peek_char(), Some('+' | '-')) {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.error("an exponent needs digits"));
            }
        }
        if self
            .peek_char()
            .is_some_and(|c| c == '_' || c == '.' || c.is_ascii_alphabetic())
        {
            return Err(self.error("a number cannot be followed by a name or a point"));
        }
        let text = &self.src[start..self.pos];
        if float {
            text.parse()
                .map(Tok::Float)
                .map_err(|_| self.error(format!("invalid number {text}")))
        } else {
            text.parse()
                .map(Tok::Int)
                .map_err(|_| self.error(format!("{text} does not fit in 64 bits")))
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        if self.src[self.pos..].starts_with("\"\"\"") {
            return self.block_string();
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek_char() else {
                return Err(self.error("unterminated string"));
            };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\n' | '\r' => return Err(self.error("unterminated string")),
                '\\' => {
                    let Some(e) = self.peek_char() else {
                        return Err(self.error("unterminated string"));
                    };
                    self.pos += e.len_utf8();
                    match e {
                        '"' => out.push('"'),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => out.push(self.unicode_escape()?),
                        other => return Err(self.error(format!("invalid escape \\{other}"))),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, SyntaxError> {
        let hex4 = |p: &mut Self| -> Result<u32, SyntaxError> {
            let h = p
                .src
                .get(p.pos..p.pos + 4)
                .filter(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| p.error("\\u needs four hex digits"))?;
            p.pos += 4;
            u32::from_str_radix(h, 16).map_err(|_| p.error("invalid \\u escape"))
        };
        let first = hex4(self)?;
        let code = if (0xD800..0xDC00).contains(&first) && self.src[self.pos..].starts_with("\\u") {
            self.pos += 2;
            let low = hex4(self)?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.error("invalid surrogate pair"));
            }
            0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.error("\\u escape is not a character"))
    }

    /// `"""…"""`: raw text (only `\"""` is an escape), with common indentation and blank
    /// leading and trailing lines removed.
    fn block_string(&mut self) -> Result<String, SyntaxError> {
        self.pos += 3;
        let mut raw = String::new();
        loop {
            let rest = &self.src[self.pos..];
            if rest.starts_with("\"\"\"") {
                self.pos += 3;
                break;
            }
            if rest.starts_with("\\\"\"\"") {
                raw.push_str("\"\"\"");
                self.pos += 4;
                continue;
            }
            let Some(c) = rest.chars().next() else {
                return Err(self.error("unterminated block string"));
            };
            raw.push(c);
            self.pos += c.len_utf8();
        }
        let lines: Vec<&str> = raw.lines().collect();
        let indent = lines
            .iter()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start_matches([' ', '\t']).len())
            .min()
            .unwrap_or(0);
        let mut out: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    (*l).to_owned()
                } else {
                    l.get(indent..).unwrap_or("").to_owned()
                }
            })
            .collect();
        while out.first().is_some_and(|l| l.trim().is_empty()) {
            out.remove(0);
        }
        while out.last().is_some_and(|l| l.trim().is_empty()) {
            out.pop();
        }
        Ok(out.join("\n"))
    }

    fn expect(&mut self, c: char) -> Result<(), SyntaxError> {
        if self.tok == Tok::Punct(c) {
            self.advance()
        } else {
            Err(self.error(format!("expected {c:?}")))
        }
    }

    fn name(&mut self) -> Result<String, SyntaxError> {
        match std::mem::replace(&mut self.tok, Tok::End) {
            Tok::Name(n) => {
                self.advance()?;
                Ok(n)
            }
            other => {
                self.tok = other;
                Err(self.error("expected a name"))
            }
        }
    }

    fn keyword(&mut self, k: &str) -> Result<(), SyntaxError> {
        if matches!(&self.tok, Tok::Name(n) if n == k) {
            self.advance()
        } else {
            Err(self.error(format!("expected {k:?}")))
        }
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn var_defs(&mut self) -> Result<Vec<VarDef>, SyntaxError> {
        self.expect('(')?;
        let mut out = vec![];
        while self.tok != Tok::Punct(')') {
            self.expect('$')?;
            let name = self.name()?;
            self.expect(':')?;
            let non_null = self.type_ref()?;
            let default = if self.tok == Tok::Punct('=') {
                self.advance()?;
                Some(self.value(true)?)
            } else {
                None
            };
            self.directives()?;
            out.push(VarDef {
                name,
                non_null,
                default,
            });
        }
        self.advance()?;
        Ok(out)
    }

    /// A type (`ID!`, `[String]`); returns whether it is non-null.
    fn type_ref(&mut self) -> Result<bool, SyntaxError> {
        if self.tok == Tok::Punct('[') {
            self.enter()?;
            self.advance()?;
            self.type_ref()?;
            self.expect(']')?;
            self.depth -= 1;
        } else {
            self.name()?;
        }
        if self.tok == Tok::Punct('!') {
            self.advance()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn directives(&mut self) -> Result<Vec<Directive>, SyntaxError> {
        let mut out = vec![];
        while self.tok == Tok::Punct('@') {
            self.advance()?;
            let name = self.name()?;
            let args = self.arguments(false)?;
            out.push(Directive { name, args });
        }
        Ok(out)
    }

    fn arguments(&mut self, constant: bool) -> Result<Vec<(String, Val)>, SyntaxError> {
        let mut out = vec![];
        if self.tok != Tok::Punct('(') {
            return Ok(out);
        }
        self.advance()?;
        while self.tok != Tok::Punct(')') {
            let name = self.name()?;
            self.expect(':')?;
            out.push((name, self.value(constant)?));
        }
        self.advance()?;
        Ok(out)
    }

    fn value(&mut self, constant: bool) -> Result<Val, SyntaxError> {
        let v = match std::mem::replace(&mut self.tok, Tok::End) {
            Tok::Punct('$') if !constant => {
                self.advance()?;
                return Ok(Val::Var(self.name()?));
            }
            Tok::Int(i) => Val::Int(i),
            Tok::Float(f) => Val::Float(f),
            Tok::Str(s) => Val::Str(s),
            Tok::Name(n) => match n.as_str() {
                "true" => Val::Bool(true),
                "false" => Val::Bool(false),
                "null" => Val::Null,
                _ => Val::Enum(n),
            },
            Tok::Punct('[') => {
                self.enter()?;
                self.advance()?;
                let mut items = vec![];
                while self.tok != Tok::Punct(']') {
                    items.push(self.value(constant)?);
                }
                self.advance()?;
                self.depth -= 1;
                return Ok(Val::List(items));
            }
            Tok::Punct('{') => {
                self.enter()?;
                self.advance()?;
                let mut fields = vec![];
                while self.tok != Tok::Punct('}') {
                    let name = self.name()?;
                    self.expect(':')?;
                    fields.push((name, self.value(constant)?));
                }
                self.advance()?;
                self.depth -= 1;
                return Ok(Val::Obj(fields));
            }
            other => {
                self.tok = other;
                return Err(self.error("expected a value"));
            }
        };
        self.advance()?;
        Ok(v)
    }

    fn selection_set(&mut self) -> Result<Vec<Sel>, SyntaxError> {
        self.enter()?;
        self.expect('{')?;
        let mut out = vec![];
        while self.tok != Tok::Punct('}') {
            if self.tok == Tok::End {
                return Err(self.error("expected \"}\""));
            }
            out.push(self.selection()?);
        }
        if out.is_empty() {
            return Err(self.error("a selection set cannot be empty"));
        }
        self.advance()?;
        self.depth -= 1;
        Ok(out)
    }

    fn selection(&mut self) -> Result<Sel, SyntaxError> {
        if self.tok == Tok::Spread {
            self.advance()?;
            let on_type = matches!(&self.tok, Tok::Name(n) if n == "on");
            if let Tok::Name(_) = &self.tok
                && !on_type
            {
                let name = self.name()?;
                let directives = self.directives()?;
                return Ok(Sel::Spread { name, directives });
            }
            let on = if on_type {
                self.advance()?;
                Some(self.name()?)
            } else {
                None
            };
            let directives = self.directives()?;
            let selection = self.selection_set()?;
            return Ok(Sel::Inline {
                on,
                directives,
                selection,
            });
        }
        let first = self.name()?;
        let (alias, name) = if self.tok == Tok::Punct(':') {
            self.advance()?;
            (Some(first), self.name()?)
        } else {
            (None, first)
        };
        let args = self.arguments(false)?;
        let directives = self.directives()?;
        let selection = if self.tok == Tok::Punct('{') {
            self.selection_set()?
        } else {
            vec![]
        };
        Ok(Sel::Field(Field {
            alias,
            name,
            args,
            directives,
            selection,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_documents_parse() {
        let doc = parse(
            "mutation CreateApprovalRequest($request: ApprovalRequestInput!) {
               createApprovalRequest(request: $request) { id portalUrl callbackSecret }
             }",
        )
        .expect("parse");
        let op = &doc.operations[0];
        assert_eq!(op.kind, OpKind::Mutation);
        assert_eq!(op.name.as_deref(), Some("CreateApprovalRequest"));
        assert!(op.vars[0].non_null);
        let Sel::Field(f) = &op.selection[0] else {
            panic!("a field")
        };
        assert_eq!(f.name, "createApprovalRequest");
        assert_eq!(f.args, [("request".to_owned(), Val::Var("request".into()))]);
        assert_eq!(f.selection.len(), 3);
    }

    #[test]
    fn values_fragments_and_comments() {
        let doc = parse(
            r#"# a comment
            query Q($n: Int = 3) {
              a: f(s: "x\n\u00e9\"", b: """
                  block
                    text
              """, l: [1, -2.5e1, true, null, RED], o: {k: $n}) @include(if: true) { ...F }
              ... on Query { g }
            }
            fragment F on T { h }"#,
        )
        .expect("parse");
        let Sel::Field(f) = &doc.operations[0].selection[0] else {
            panic!("a field")
        };
        assert_eq!(f.key(), "a");
        assert_eq!(f.args[0].1, Val::Str("x\né\"".into()));
        assert_eq!(f.args[1].1, Val::Str("block\n  text".into()));
        assert_eq!(
            f.args[2].1,
            Val::List(vec![
                Val::Int(1),
                Val::Float(-25.0),
                Val::Bool(true),
                Val::Null,
                Val::Enum("RED".into())
            ])
        );
        assert_eq!(doc.fragments[0].name, "F");
        assert_eq!(doc.operations[0].vars[0].default, Some(Val::Int(3)));
    }

    #[test]
    fn errors_have_a_position_and_depth_is_bounded() {
        let e = parse("query {\n  f(x: )\n}").expect_err("bad");
        assert_eq!((e.line, e.column), (2, 8), "{e}");
        let deep = format!("{}{}", "{ a ".repeat(100), "}".repeat(100));
        assert!(parse(&deep).expect_err("deep").message.contains("nested"));
        let list = format!("{{ f(x: {}1{}) }}", "[".repeat(100), "]".repeat(100));
        assert!(parse(&list).expect_err("deep").message.contains("nested"));
        assert!(parse("{ }").is_err());
        assert!(parse("\"unterminated").is_err());
        assert!(parse("type Foo { a: Int }").is_err());
    }
}
