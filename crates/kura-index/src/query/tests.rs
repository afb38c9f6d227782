use kura_core::labels::Label;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{Comparison, Query, parse_json, parse_text, to_text};

/// The tree as an s-expression, so each expectation shows the structure the parser built.
fn tree(query: &Query) -> String {
    match query {
        Query::Label(label) => label.to_string(),
        Query::Age { min, max } => {
            let bound = |bound: &Option<u32>| bound.map_or("_".to_owned(), |years| years.to_string());
            format!("age[{},{}]", bound(min), bound(max))
        }
        Query::Value { code, op, value } => format!("{code}{}{value}", op.symbol()),
        Query::All(children) => format!("(and {})", children.iter().map(tree).collect::<Vec<_>>().join(" ")),
        Query::Any(children) => format!("(or {})", children.iter().map(tree).collect::<Vec<_>>().join(" ")),
        Query::Not(inner) => format!("(not {})", tree(inner)),
    }
}

/// The parse as a tree, or `error: <message>`.
fn outcome(parsed: Result<Query, crate::QueryError>) -> String {
    match parsed {
        Ok(query) => tree(&query),
        Err(error) => format!("error: {error}"),
    }
}

fn check(input: &str, expected: &str) {
    assert_eq!(outcome(parse_text(input)), expected, "{input:?}");
}

fn check_json(input: Value, expected: &str) {
    assert_eq!(outcome(parse_json(&input)), expected, "{input}");
}

#[test]
fn text_criteria() {
    check("snomed:44054006", "snomed:44054006");
    check("icd10:E11.9", "icd10:E11.9");
    check("institution:org_1:x", "institution:org_1:x");
    check("age:40..60", "age[40,60]");
    check("age:40..", "age[40,_]");
    check("age:..17", "age[_,17]");
    check("age:45", "age[45,45]");
    check("age:0..0", "age[0,0]");
    check("loinc:4548-4>7", "loinc:4548-4>7");
    check("loinc:4548-4>=7.5", "loinc:4548-4>=7.5");
    check("loinc:4548-4<-1", "loinc:4548-4<-1");
    check("loinc:4548-4<=0.25", "loinc:4548-4<=0.25");
    check("loinc:4548-4=5", "loinc:4548-4=5");
    check("loinc:4548-4>1e3", "loinc:4548-4>1000");
    check("loinc:4548-4>-0", "loinc:4548-4>0");
}

#[test]
fn text_quoted_labels() {
    check(r#""x:a(b)""#, "x:a(b)");
    check(r#""age:7""#, "age:7");
    check(r#""x:a<b">3"#, "x:a<b>3");
    check(r#""q:a\"b\\c""#, r#"q:a"b\c"#);
    check(r#"a:b"c"#, r#"a:b"c"#);
}

#[test]
fn text_operators() {
    check("a:1 AND b:2", "(and a:1 b:2)");
    check("b:2 and a:1", "(and a:1 b:2)");
    check("a:1 OR b:2 AND c:3", "(or a:1 (and b:2 c:3))");
    check("(a:1 OR b:2) AND c:3", "(and (or a:1 b:2) c:3)");
    check("NOT a:1", "(not a:1)");
    check("not NOT a:1", "a:1");
    check("NOT a:1 AND b:2", "(and (not a:1) b:2)");
    check("NOT (a:1 AND b:2)", "(not (and a:1 b:2))");
    check("a:1 AND (b:2 AND c:3)", "(and a:1 b:2 c:3)");
    check("a:1 or (b:2 OR c:3) Or d:4", "(or a:1 b:2 c:3 d:4)");
    check("a:1 AND a:1", "a:1");
    check("((a:1))", "a:1");
    check("  a:1\tAND\nb:2 ", "(and a:1 b:2)");
    check("a:1 AND(b:2)", "(and a:1 b:2)");
    check(
        "snomed:44054006 AND sex:female AND age:40..60 AND loinc:4548-4>7",
        "(and age[40,60] loinc:4548-4>7 sex:female snomed:44054006)",
    );
}

#[test]
fn text_errors() {
    check("", "error: the query is empty");
    check(" \t ", "error: the query is empty");
    check("a:1 AND", "error: at column 8: expected a label, age:, NOT or '(' but found end of query");
    check("snomed:44054006 AND ()", "error: at column 22: expected a label, age:, NOT or '(' but found ')'");
    check("a:1 b:2", "error: at column 5: expected AND, OR or end of query but found 'b:2'");
    check("(a:1", "error: at column 5: expected AND, OR or ')' but found end of query");
    check("(a:1 b:2)", "error: at column 6: expected AND, OR or ')' but found 'b:2'");
    check("a:1)", "error: at column 4: expected AND, OR or end of query but found ')'");
    check("or a:1", "error: at column 1: expected a label, age:, NOT or '(' but found OR");
    check("NOT", "error: at column 4: expected a label, age:, NOT or '(' but found end of query");
    check("diabetes", "error: at column 1: expected a label, age:, NOT or '(' but found 'diabetes'");
    check(">7", "error: at column 1: expected a label, age:, NOT or '(' but found '>7'");
    check(
        "ICD10:E11",
        "error: at column 1: 'ICD10:E11' is not a label: the label system must be lower-case letters, digits, '-' or '_'",
    );
    check("a:1 AND loinc:4548-4>", "error: at column 22: expected a number after '>' but found nothing");
    check("loinc:1>x", "error: at column 9: expected a number after '>' but found 'x'");
    check("loinc:1>inf", "error: at column 9: expected a number after '>' but found 'inf'");
    check("loinc:1>1e999", "error: at column 9: expected a number after '>' but found '1e999'");
    check("loinc:1>=", "error: at column 10: expected a number after '>=' but found nothing");
    check("loinc:1=>3", "error: at column 9: expected a number after '=' but found '>3'");
    check("age:60..40", "error: at column 1: the age range 60..40 has its minimum above its maximum");
    let bad_age = |word: &str| {
        format!("error: at column 1: expected an age like age:40..60, age:40.., age:..17 or age:45 but found '{word}'")
    };
    for word in ["age:..", "age:", "age:x", "age:-1", "age:4.5", "age:4294967296", "age:1..2..3", "age:>3"] {
        check(word, &bad_age(word));
    }
    check(r#""a:1"#, "error: at column 1: the quoted label is not closed");
    check(r#""a:1"x"#, "error: at column 6: expected <, <=, >, >=, = or a space after the quoted label but found 'x'");
    check(r#""a:\n""#, r#"error: at column 4: a backslash in a quoted label must be followed by " or \"#);
    check(r#""abc""#, "error: at column 1: 'abc' is not a label: a label is written system:code");
    let long = "x".repeat(50);
    check(&long, &format!("error: at column 1: expected a label, age:, NOT or '(' but found '{}...'", "x".repeat(40)));
    // Columns count bytes, so a multi-byte character before the problem shifts them.
    check("a:é AND )", "error: at column 10: expected a label, age:, NOT or '(' but found ')'");
}

#[test]
fn text_limits() {
    let criteria = |count: usize| (0..count).map(|n| format!("a:{n}")).collect::<Vec<_>>().join(" AND ");
    assert_eq!(parse_text(&criteria(200)).map(|query| matches!(query, Query::All(ref c) if c.len() == 200)), Ok(true));
    check(&criteria(201), "error: the query is too complex: it has more than 200 criteria");
    check(&format!("{}a:1", "NOT ".repeat(20)), "a:1");
    check(&format!("{}a:1", "NOT ".repeat(21)), "error: the query is too complex: it nests deeper than 20 levels");
    check(&format!("{}a:1{}", "(".repeat(20), ")".repeat(20)), "a:1");
    check(
        &format!("{}a:1{}", "(".repeat(21), ")".repeat(21)),
        "error: the query is too complex: it nests deeper than 20 levels",
    );
    // Twenty alternating levels of AND and OR stay within the limit; a twenty-first does not.
    let nested = |levels: usize| {
        let mut text = "a:0".to_owned();
        for level in 1..=levels {
            let keyword = if level % 2 == 0 { "AND" } else { "OR" };
            text = format!("b:{level} {keyword} ({text})");
        }
        text
    };
    assert!(parse_text(&nested(20)).is_ok());
    check(&nested(21), "error: the query is too complex: it nests deeper than 20 levels");
    // A deep input fails on the limit, not on the stack.
    check(&"NOT ".repeat(100_000), "error: the query is too complex: it nests deeper than 20 levels");
}

#[test]
fn json_criteria() {
    check_json(json!({"label": "snomed:44054006"}), "snomed:44054006");
    check_json(json!({"label": "age:7"}), "age:7");
    check_json(json!({"age": {"min": 40, "max": 60}}), "age[40,60]");
    check_json(json!({"age": {"min": 40}}), "age[40,_]");
    check_json(json!({"age": {"max": 17}}), "age[_,17]");
    check_json(json!({"age": {"min": 40, "max": null}}), "age[40,_]");
    check_json(json!({"value": {"code": "loinc:4548-4", "op": ">", "value": 7}}), "loinc:4548-4>7");
    check_json(json!({"value": {"op": "<=", "value": -7.25, "code": "loinc:4548-4"}}), "loinc:4548-4<=-7.25");
    check_json(json!({"all": [{"label": "b:2"}, {"label": "a:1"}]}), "(and a:1 b:2)");
    check_json(json!({"any": [{"label": "a:1"}, {"not": {"label": "b:2"}}]}), "(or (not b:2) a:1)");
    check_json(json!({"all": [{"label": "a:1"}]}), "a:1");
    check_json(json!({"text": "a:1 AND b:2"}), "(and a:1 b:2)");
    check_json(json!({"all": [{"text": "a:1 OR b:2"}, {"label": "c:3"}]}), "(and (or a:1 b:2) c:3)");
}

#[test]
fn json_errors() {
    let everything = "label, age, value, all, any, not or text";
    check_json(json!({}), &format!("error: query: expected one of {everything}"));
    check_json(json!([]), &format!("error: query: expected an object with one of {everything}"));
    check_json(json!("a:1"), &format!("error: query: expected an object with one of {everything}"));
    check_json(
        json!({"label": "a:1", "age": {"min": 1}}),
        "error: query: expected exactly one key but found label, age",
    );
    check_json(json!({"lable": "a:1"}), &format!("error: lable: unknown key; expected one of {everything}"));
    check_json(json!({"all": []}), "error: all: expected a non-empty list of queries");
    check_json(json!({"any": {"label": "a:1"}}), "error: any: expected a non-empty list of queries");
    check_json(
        json!({"all": [{"label": "a:1"}, {"label": "b:1"}, {"value": {"code": "loinc:1", "op": "~", "value": 1}}]}),
        "error: all[2].value.op: expected one of <, <=, >, >=, =",
    );
    check_json(
        json!({"not": {"any": [{"label": "a:1"}, 3]}}),
        &format!("error: not.any[1]: expected an object with one of {everything}"),
    );
    check_json(json!({"value": {"code": "loinc:1", "op": ">"}}), "error: value: missing key value");
    check_json(json!({"value": {"code": "loinc:1", "op": ">", "value": "7"}}), "error: value.value: expected a number");
    check_json(
        json!({"value": {"code": "loinc:1", "op": 1, "value": 7}}),
        "error: value.op: expected one of <, <=, >, >=, =",
    );
    check_json(
        json!({"value": {"code": "LOINC:1", "op": ">", "value": 7}}),
        "error: value.code: the label system must be lower-case letters, digits, '-' or '_'",
    );
    check_json(
        json!({"value": {"code": "loinc:1", "op": ">", "value": 7, "unit": "%"}}),
        "error: value.unit: unknown key; expected code, op or value",
    );
    check_json(json!({"value": "loinc:1>7"}), "error: value: expected an object with code, op and value");
    check_json(json!({"age": {"min": 60, "max": 40}}), "error: age: min 60 is greater than max 40");
    check_json(json!({"age": {"min": -1}}), "error: age.min: expected a whole number of years");
    check_json(json!({"age": {"max": 4.5}}), "error: age.max: expected a whole number of years");
    check_json(json!({"age": {"min": 4_294_967_296_u64}}), "error: age.min: expected a whole number of years");
    check_json(json!({"age": {}}), "error: age: expected min, max or both");
    check_json(json!({"age": {"years": 3}}), "error: age.years: unknown key; expected min or max");
    check_json(json!({"age": 40}), "error: age: expected an object with min, max or both");
    check_json(json!({"label": 5}), "error: label: expected a label written system:code");
    check_json(
        json!({"label": "a:b c"}),
        "error: label: the label code must be non-empty and hold no spaces or control characters",
    );
    check_json(
        json!({"text": "a:1 AND"}),
        "error: text: at column 8: expected a label, age:, NOT or '(' but found end of query",
    );
    check_json(json!({"text": ""}), "error: text: the query is empty");
    check_json(json!({"text": 1}), "error: text: expected a string in the text form");
    check_json(
        json!({"all": [{"label": "a:1"}, {"any": [{"text": "x"}]}]}),
        "error: all[1].any[0].text: at column 1: expected a label, age:, NOT or '(' but found 'x'",
    );
}

#[test]
fn json_limits() {
    let mut deep = json!({"label": "a:1"});
    for _ in 0..20 {
        deep = json!({"not": deep});
    }
    check_json(deep.clone(), "a:1");
    check_json(json!({"not": deep}), "error: the query is too complex: it nests deeper than 20 levels");
    let many: Vec<Value> = (0..201).map(|n| json!({"label": format!("a:{n}")})).collect();
    check_json(json!({"any": many}), "error: the query is too complex: it has more than 200 criteria");
}

#[test]
fn canonical_text() {
    let check = |input: &str, expected: &str| {
        let query = parse_text(input).unwrap();
        assert_eq!(to_text(&query), expected, "{input}");
    };
    check("sex:female AND snomed:44054006 AND age:40..60", "age:40..60 AND sex:female AND snomed:44054006");
    check("b:1 OR a:1 AND c:1", "(a:1 AND c:1) OR b:1");
    check("NOT (b:1 OR a:1)", "NOT (a:1 OR b:1)");
    check("age:45", "age:45");
    check("age:..17 OR age:18..", "age:..17 OR age:18..");
    check("loinc:1>=7.50", "loinc:1>=7.5");
    check(r#""x:a(b)" AND "age:3" AND "y:a\"b""#, r#""age:3" AND "x:a(b)" AND y:a"b"#);
    check(r#""x:<\\""#, r#""x:<\\""#);
    // Queries built in code get the same canonical text as their parsed equivalents.
    let label = |text: &str| Query::Label(Label::parse(text).unwrap());
    let built = Query::All(vec![label("b:1"), Query::All(vec![label("a:1"), label("b:1")])]);
    assert_eq!(to_text(&built), "a:1 AND b:1");
    assert_eq!(to_text(&Query::Age { min: None, max: None }), "age:0..");
    assert_eq!(to_text(&Query::Not(Box::new(Query::Not(Box::new(label("a:1")))))), "a:1");
    let negative_zero = Query::Value { code: Label::parse("v:1").unwrap(), op: Comparison::Eq, value: -0.0 };
    assert_eq!(to_text(&negative_zero), "v:1=0");
}

/// The JSON form of a query, written the way an API client would.
fn to_json(query: &Query) -> Value {
    match query {
        Query::Label(label) => json!({"label": label.as_str()}),
        Query::Age { min, max } => {
            let mut bounds = serde_json::Map::new();
            if let Some(min) = min {
                bounds.insert("min".to_owned(), json!(min));
            }
            if let Some(max) = max {
                bounds.insert("max".to_owned(), json!(max));
            }
            json!({"age": bounds})
        }
        Query::Value { code, op, value } => {
            json!({"value": {"code": code.as_str(), "op": op.symbol(), "value": value}})
        }
        Query::All(children) => json!({"all": children.iter().map(to_json).collect::<Vec<_>>()}),
        Query::Any(children) => json!({"any": children.iter().map(to_json).collect::<Vec<_>>()}),
        Query::Not(inner) => json!({"not": to_json(inner)}),
    }
}

fn labels() -> impl Strategy<Value = Label> {
    const TEXTS: [&str; 13] = [
        "a:1",
        "a:2",
        "b:x.y",
        "sex:female",
        "institution:org:1",
        "x:a(b",
        "x:b)",
        "age:7",
        "w:<=",
        "y:q\"r",
        "z:back\\slash",
        "v:=3",
        "n:NOT",
    ];
    prop::sample::select(&TEXTS[..]).prop_map(|text| Label::parse(text).unwrap())
}

fn comparisons() -> impl Strategy<Value = Comparison> {
    prop::sample::select(&[Comparison::Lt, Comparison::Le, Comparison::Gt, Comparison::Ge, Comparison::Eq][..])
}

/// Any query the parsers can return before normalization: within the limits, ages with a bound
/// and min <= max, finite values, non-empty lists.
fn queries() -> impl Strategy<Value = Query> {
    let finite = prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO;
    let small = (-1000i32..1000).prop_map(|tenths| f64::from(tenths) / 10.0);
    let age = (prop::option::of(0u32..130), prop::option::of(0u32..130))
        .prop_filter("an age has a bound", |(min, max)| min.is_some() || max.is_some())
        .prop_map(|(min, max)| match (min, max) {
            (Some(min), Some(max)) if min > max => Query::Age { min: Some(max), max: Some(min) },
            _ => Query::Age { min, max },
        });
    let leaf = prop_oneof![
        labels().prop_map(Query::Label),
        age,
        (labels(), comparisons(), prop_oneof![finite, small]).prop_map(|(code, op, value)| Query::Value {
            code,
            op,
            value
        }),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Query::All),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Query::Any),
            inner.prop_map(|query| Query::Not(Box::new(query))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn canonical_text_reads_back(query in queries()) {
        let normal = query.clone().normalized();
        let text = to_text(&query);
        prop_assert_eq!(parse_text(&text), Ok(normal.clone()), "{}", text);
        prop_assert_eq!(to_text(&normal), text.clone());
        prop_assert_eq!(normal.clone().normalized(), normal.clone());
        prop_assert_eq!(parse_json(&to_json(&query)), Ok(normal.clone()));
        prop_assert_eq!(parse_json(&json!({"text": text})), Ok(normal));
    }

    #[test]
    fn no_text_makes_the_parser_panic(input in "[a-z0-9:()<>=.\" \\\\ANDORTage-]{0,40}") {
        if let Ok(query) = parse_text(&input) {
            prop_assert_eq!(parse_text(&to_text(&query)), Ok(query));
        }
    }
}
