//! The compact text form of queries (grammar in the crate documentation): a tokenizer and a
//! recursive-descent parser whose recursion is bounded by [`MAX_DEPTH`], so no input can
//! exhaust the stack.

use kura_core::labels::{InvalidLabel, Label};

use crate::query::{Comparison, Complexity, MAX_CRITERIA, MAX_DEPTH, Query, QueryError, check_limits};

/// Parses the text form and returns the query in normal form (see [`Query::normalized`]).
pub fn parse_text(input: &str) -> Result<Query, QueryError> {
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(QueryError::Empty);
    }
    let mut parser = Parser { tokens, position: 0, end: input.len(), nesting: 0, criteria: 0 };
    let query = parser.expression()?;
    if let Some(token) = parser.tokens.get(parser.position) {
        return Err(error_at(token.offset, format!("expected AND, OR or end of query but found {}", token.describe())));
    }
    check_limits(&query)?;
    Ok(query.normalized())
}

fn error_at(offset: usize, message: String) -> QueryError {
    QueryError::Text { column: offset + 1, message }
}

#[derive(Debug)]
enum TokenKind<'a> {
    Open,
    Close,
    And,
    Or,
    Not,
    /// A word that is not a keyword: a label, an age or a value comparison.
    Word,
    /// A quoted label, with what follows the closing quote up to the next space or parenthesis.
    Quoted {
        label: String,
        suffix: &'a str,
        suffix_offset: usize,
    },
}

#[derive(Debug)]
struct Token<'a> {
    kind: TokenKind<'a>,
    /// Byte offset of the token's first character.
    offset: usize,
    /// The token as written.
    source: &'a str,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self.kind {
            TokenKind::Open => "'('".to_owned(),
            TokenKind::Close => "')'".to_owned(),
            TokenKind::And | TokenKind::Or | TokenKind::Not => self.source.to_ascii_uppercase(),
            TokenKind::Word | TokenKind::Quoted { .. } => quote(self.source),
        }
    }
}

/// A piece of the input for an error message, cut short so that a pasted document does not
/// come back whole.
fn quote(text: &str) -> String {
    const LONGEST: usize = 40;
    match text.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("'{}...'", &text[..cut]),
        None => format!("'{text}'"),
    }
}

fn ends_word(character: char) -> bool {
    character.is_whitespace() || character == '(' || character == ')'
}

fn tokenize(input: &str) -> Result<Vec<Token<'_>>, QueryError> {
    let mut tokens = Vec::new();
    let mut rest = input.char_indices().peekable();
    while let Some(&(offset, character)) = rest.peek() {
        if character.is_whitespace() {
            rest.next();
            continue;
        }
        if character == '(' || character == ')' {
            rest.next();
            let kind = if character == '(' { TokenKind::Open } else { TokenKind::Close };
            tokens.push(Token { kind, offset, source: &input[offset..offset + 1] });
            continue;
        }
        if character == '"' {
            rest.next();
            let mut label = String::new();
            let mut closed = false;
            while let Some((position, character)) = rest.next() {
                match character {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match rest.next() {
                        Some((_, escaped @ ('"' | '\\'))) => label.push(escaped),
                        _ => {
                            let message = "a backslash in a quoted label must be followed by \" or \\".to_owned();
                            return Err(error_at(position, message));
                        }
                    },
                    other => label.push(other),
                }
            }
            if !closed {
                return Err(error_at(offset, "the quoted label is not closed".to_owned()));
            }
            let suffix_offset = rest.peek().map_or(input.len(), |&(position, _)| position);
            let end = word_end(input, suffix_offset);
            while rest.peek().is_some_and(|&(position, _)| position < end) {
                rest.next();
            }
            let kind = TokenKind::Quoted { label, suffix: &input[suffix_offset..end], suffix_offset };
            tokens.push(Token { kind, offset, source: &input[offset..end] });
            continue;
        }
        let end = word_end(input, offset);
        while rest.peek().is_some_and(|&(position, _)| position < end) {
            rest.next();
        }
        let source = &input[offset..end];
        let kind = if source.eq_ignore_ascii_case("and") {
            TokenKind::And
        } else if source.eq_ignore_ascii_case("or") {
            TokenKind::Or
        } else if source.eq_ignore_ascii_case("not") {
            TokenKind::Not
        } else {
            TokenKind::Word
        };
        tokens.push(Token { kind, offset, source });
    }
    Ok(tokens)
}

/// The byte offset where the word starting at `start` ends.
fn word_end(input: &str, start: usize) -> usize {
    input[start..].find(ends_word).map_or(input.len(), |length| start + length)
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    position: usize,
    /// Length of the input, where "end of query" is reported.
    end: usize,
    /// Open parentheses and NOTs around the current position.
    nesting: usize,
    criteria: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.position)
    }

    fn found(&self) -> (usize, String) {
        match self.peek() {
            Some(token) => (token.offset, token.describe()),
            None => (self.end, "end of query".to_owned()),
        }
    }

    fn eat(&mut self, keyword: fn(&TokenKind<'a>) -> bool) -> bool {
        let matched = self.peek().is_some_and(|token| keyword(&token.kind));
        if matched {
            self.position += 1;
        }
        matched
    }

    /// `expr := term (OR term)*`
    fn expression(&mut self) -> Result<Query, QueryError> {
        let mut terms = vec![self.term()?];
        while self.eat(|kind| matches!(kind, TokenKind::Or)) {
            terms.push(self.term()?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Query::Any(terms) })
    }

    /// `term := factor (AND factor)*`
    fn term(&mut self) -> Result<Query, QueryError> {
        let mut factors = vec![self.factor()?];
        while self.eat(|kind| matches!(kind, TokenKind::And)) {
            factors.push(self.factor()?);
        }
        Ok(if factors.len() == 1 { factors.remove(0) } else { Query::All(factors) })
    }

    /// `factor := NOT factor | '(' expr ')' | criterion`
    fn factor(&mut self) -> Result<Query, QueryError> {
        let Some(token) = self.peek() else {
            let (offset, found) = self.found();
            return Err(error_at(offset, format!("expected a label, age:, NOT or '(' but found {found}")));
        };
        let criterion = match &token.kind {
            TokenKind::Not | TokenKind::Open => None,
            TokenKind::Quoted { label, suffix, suffix_offset } => {
                Some(quoted_criterion(label, suffix, *suffix_offset, token.offset))
            }
            TokenKind::Word => Some(bare_criterion(token.source, token.offset)),
            TokenKind::Close | TokenKind::And | TokenKind::Or => {
                let found = token.describe();
                return Err(error_at(token.offset, format!("expected a label, age:, NOT or '(' but found {found}")));
            }
        };
        let negation = matches!(token.kind, TokenKind::Not);
        self.position += 1;
        if let Some(criterion) = criterion {
            self.criteria += 1;
            if self.criteria > MAX_CRITERIA {
                return Err(QueryError::TooComplex(Complexity::TooManyCriteria));
            }
            return criterion;
        }
        self.enter()?;
        let inner = if negation {
            Query::Not(Box::new(self.factor()?))
        } else {
            let inner = self.expression()?;
            if !self.eat(|kind| matches!(kind, TokenKind::Close)) {
                let (offset, found) = self.found();
                return Err(error_at(offset, format!("expected AND, OR or ')' but found {found}")));
            }
            inner
        };
        self.nesting -= 1;
        Ok(inner)
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(QueryError::TooComplex(Complexity::TooDeep));
        }
        Ok(())
    }
}

/// A label, `age:...` or `system:code<op><number>` written without quotes.
fn bare_criterion(word: &str, offset: usize) -> Result<Query, QueryError> {
    if let Some(spec) = word.strip_prefix("age:") {
        return age(word, spec, offset);
    }
    let (label_text, comparison) = word.find(['<', '>', '=']).map_or((word, ""), |at| word.split_at(at));
    let label = Label::parse(label_text).map_err(|error| match error {
        InvalidLabel::MissingColon => {
            error_at(offset, format!("expected a label, age:, NOT or '(' but found {}", quote(word)))
        }
        other => error_at(offset, format!("{} is not a label: {other}", quote(label_text))),
    })?;
    if comparison.is_empty() {
        return Ok(Query::Label(label));
    }
    value_comparison(label, comparison, offset + label_text.len())
}

fn quoted_criterion(label: &str, suffix: &str, suffix_offset: usize, offset: usize) -> Result<Query, QueryError> {
    let label =
        Label::parse(label).map_err(|error| error_at(offset, format!("{} is not a label: {error}", quote(label))))?;
    if suffix.is_empty() {
        return Ok(Query::Label(label));
    }
    if !suffix.starts_with(['<', '>', '=']) {
        let message = format!("expected <, <=, >, >=, = or a space after the quoted label but found {}", quote(suffix));
        return Err(error_at(suffix_offset, message));
    }
    value_comparison(label, suffix, suffix_offset)
}

/// `<op><number>` after a label, starting at byte `offset`.
fn value_comparison(code: Label, text: &str, offset: usize) -> Result<Query, QueryError> {
    let symbol_length = if text.starts_with("<=") || text.starts_with(">=") { 2 } else { 1 };
    let (symbol, number) = text.split_at(symbol_length);
    let op = Comparison::from_symbol(symbol).unwrap_or(Comparison::Eq);
    let value = parse_number(number).ok_or_else(|| {
        let found = if number.is_empty() { "nothing".to_owned() } else { quote(number) };
        error_at(offset + symbol_length, format!("expected a number after '{symbol}' but found {found}"))
    })?;
    Ok(Query::Value { code, op, value })
}

/// A finite decimal number such as `7`, `-0.5` or `1e3`; never `inf` or `NaN`.
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    let plausible = !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit() || matches!(byte, b'.' | b'-' | b'+' | b'e' | b'E'));
    if !plausible {
        return None;
    }
    text.parse::<f64>().ok().filter(|value| value.is_finite())
}

/// `age:40..60`, `age:40..`, `age:..17` or `age:45`; `spec` is the part after `age:`.
fn age(word: &str, spec: &str, offset: usize) -> Result<Query, QueryError> {
    let invalid = || {
        let message =
            format!("expected an age like age:40..60, age:40.., age:..17 or age:45 but found {}", quote(word));
        error_at(offset, message)
    };
    let years = |text: &str| -> Result<Option<u32>, QueryError> {
        if text.is_empty() {
            return Ok(None);
        }
        if !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid());
        }
        text.parse::<u32>().map(Some).map_err(|_| invalid())
    };
    let Some((low, high)) = spec.split_once("..") else {
        let exact = years(spec)?.ok_or_else(invalid)?;
        return Ok(Query::Age { min: Some(exact), max: Some(exact) });
    };
    let (min, max) = (years(low)?, years(high)?);
    match (min, max) {
        (None, None) => Err(invalid()),
        (Some(min), Some(max)) if min > max => {
            Err(error_at(offset, format!("the age range {min}..{max} has its minimum above its maximum")))
        }
        _ => Ok(Query::Age { min, max }),
    }
}
