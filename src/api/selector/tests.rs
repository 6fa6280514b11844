//! Tests of label and field selectors.
use super::*;
use serde_json::json;

fn labels(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn sel(s: &str) -> LabelSelector {
    match LabelSelector::parse(s) {
        Ok(sel) => sel,
        Err(e) => panic!("{s:?} did not parse: {e}"),
    }
}

fn err(s: &str) -> String {
    match LabelSelector::parse(s) {
        Ok(sel) => panic!("{s:?} parsed as {sel:?}"),
        Err(e) => e,
    }
}

#[test]
fn parses_every_operator() {
    let l = labels(json!({"app": "web", "tier": "a", "n": "5"}));
    for (s, want) in [
        ("app=web", true),
        ("app==web", true),
        ("app!=web", false),
        ("app!=db", true),
        ("tier in (a,b)", true),
        ("tier notin (a,b)", false),
        ("tier notin (c)", true),
        ("app", true),
        ("!app", false),
        ("!missing", true),
        ("missing", false),
        ("n>3", true),
        ("n<3", false),
        ("n>5", false),
        ("app=web,tier in (a),n<10", true),
        ("", true),
    ] {
        assert_eq!(sel(s).matches(Some(&l)), want, "{s}");
    }
}

#[test]
fn negative_operators_match_objects_without_the_key() {
    assert!(sel("app!=web").matches(None));
    assert!(sel("app notin (web)").matches(Some(&labels(json!({"x": "y"})))));
    assert!(!sel("app in (web)").matches(None));
    assert!(!sel("n>1").matches(Some(&labels(json!({"n": "abc"})))));
}

#[test]
fn tolerates_whitespace() {
    let a = sel("  app = web ,  tier   in   ( a , b ) ,! x ");
    assert_eq!(a.to_string(), "app=web,tier in (a,b),!x");
    assert_eq!(sel("app\t!=\nweb").to_string(), "app!=web");
}

#[test]
fn renders_canonically_sorted_by_key() {
    assert_eq!(
        sel("tier in (b,a),app=web").to_string(),
        "app=web,tier in (a,b)"
    );
    assert_eq!(
        sel("a notin (x),b==y,c,!d,e>1,f<2").to_string(),
        "a notin (x),b==y,c,!d,e>1,f<2"
    );
    assert_eq!(sel("a in (in,notin)").to_string(), "a in (in,notin)");
}

#[test]
fn round_trips() {
    for s in [
        "app=web",
        "a in (x,y),b notin (z),c,!d",
        "x=",
        "k8s.io/app=v1.2_3",
        "n>-1",
    ] {
        let Ok(once) = LabelSelector::parse(s) else {
            continue;
        };
        let twice = sel(&once.to_string());
        assert_eq!(once, twice, "{s}");
    }
}

#[test]
fn empty_values_are_allowed() {
    let s = sel("a=,b in (),c in (,x)");
    assert!(s.matches(Some(&labels(json!({"a": "", "b": "", "c": "x"})))));
    assert_eq!(s.to_string(), "a=,b in (),c in (,x)");
}

#[test]
fn keywords_are_values_in_value_position() {
    assert!(sel("x in (in)").matches(Some(&labels(json!({"x": "in"})))));
    assert!(sel("x=notin").matches(Some(&labels(json!({"x": "notin"})))));
}

#[test]
fn parse_errors_match_upstream() {
    assert_eq!(
        err("a b"),
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    );
    assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
    assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
    assert_eq!(
        err("=a"),
        "found '=', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        err("a in b"),
        "unable to parse requirement: found 'b' expected: '('"
    );
    assert_eq!(
        err("a in (b c)"),
        "unable to parse requirement: found 'c', expected: ',' or ')'"
    );
    assert_eq!(
        err("a in (b"),
        "unable to parse requirement: found '', expected: ',' or ')'"
    );
    assert_eq!(
        err("a in (="),
        "unable to parse requirement: found '=', expected: ',', ')' or identifier"
    );
    assert_eq!(
        err("a in (b,=)"),
        "unable to parse requirement: found '=', expected: ',', or identifier"
    );
}

#[test]
fn double_equals_with_empty_value_parses() {
    assert_eq!(sel("a==").to_string(), "a==");
}

#[test]
fn key_and_value_errors_match_upstream() {
    assert_eq!(
        err("app_=x"),
        "unable to parse requirement: <nil>: Invalid value: \"app_\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    );
    assert_eq!(
        err("app=we@b"),
        "unable to parse requirement: values[0][app]: Invalid value: \"we@b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    );
    assert_eq!(
        err("n>x"),
        "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
    );
    let long = "v".repeat(64);
    assert!(err(&format!("a={long}")).contains("must be no more than 63 bytes"));
    assert!(err("a/b/c=d").contains("a valid label key must consist of"));
}

#[test]
fn not_equals_and_bang_lex_correctly() {
    assert_eq!(err("!a=b"), "found '=', expected: ',' or 'end of string'");
    assert_eq!(
        sel("a!=b").requirements()[0].operator(),
        Operator::NotEquals
    );
}

#[test]
fn exact_match_fast_path() {
    let s = sel("app=web,tier in (a),x in (a,b),y!=z");
    assert_eq!(s.exact("app"), Some("web"));
    assert_eq!(s.exact("tier"), Some("a"));
    assert_eq!(s.exact("x"), None);
    assert_eq!(s.exact("y"), None);
}

#[test]
fn from_json_builds_and_validates() {
    let s = LabelSelector::from_json(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]},
            {"key": "canary", "operator": "DoesNotExist"}
        ]
    }))
    .unwrap_or_default();
    assert_eq!(s.to_string(), "app=web,!canary,tier in (a,b)");
    assert!(s.matches(Some(&labels(json!({"app": "web", "tier": "a"})))));
    assert!(!s.matches(Some(&labels(
        json!({"app": "web", "tier": "a", "canary": "1"})
    ))));
    assert!(LabelSelector::from_json(&json!({}))
        .map(|s| s.is_empty())
        .unwrap_or(false));

    let e = LabelSelector::from_json(
        &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
    );
    assert_eq!(
        e,
        Err(
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
                .into()
        )
    );
    let e = LabelSelector::from_json(
        &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
    );
    assert_eq!(e, Err("values: Invalid value: [\"x\"]: values set must be empty for exists and does not exist".into()));
    let e = LabelSelector::from_json(
        &json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
    );
    assert_eq!(
        e,
        Err("\"Gt\" is not a valid label selector operator".into())
    );
    let e = LabelSelector::from_json(&json!({"matchLabels": {"bad key": "x"}}));
    assert!(
        matches!(e, Err(m) if m.starts_with("key: Invalid value: \"bad key\": name part must consist"))
    );
    assert!(LabelSelector::from_json(&Value::Null).is_err());
}

#[test]
fn display_sorts_keys_for_match_labels() {
    let s =
        LabelSelector::from_json(&json!({"matchLabels": {"z": "1", "a": "2"}})).unwrap_or_default();
    assert_eq!(s.to_string(), "a=2,z=1");
    let m = LabelSelector::from_map(&labels(json!({"b": "1", "a": "2"})));
    assert_eq!(m.to_string(), "a=2,b=1");
}

#[test]
fn several_errors_aggregate_in_brackets() {
    let e = Requirement::new("bad key", Operator::In, None);
    assert!(
        matches!(e, Err(m) if m.starts_with("[key: Invalid value: \"bad key\"") && m.ends_with("values set can't be empty]"))
    );
}

fn fields<'a>(m: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |f| m.iter().find(|(k, _)| *k == f).map(|(_, v)| v.to_string())
}

#[test]
fn field_selectors_parse_and_match() {
    let s = FieldSelector::parse("status.phase!=Succeeded,status.phase!=Failed,spec.nodeName=n1")
        .unwrap_or_default();
    assert_eq!(
        s.fields(),
        vec!["spec.nodeName", "status.phase", "status.phase"]
    );
    assert_eq!(s.exact("spec.nodeName"), Some("n1"));
    assert_eq!(s.exact("status.phase"), None);
    assert!(s.matches(&fields(&[
        ("spec.nodeName", "n1"),
        ("status.phase", "Running")
    ])));
    assert!(!s.matches(&fields(&[
        ("spec.nodeName", "n1"),
        ("status.phase", "Failed")
    ])));
    // A missing field compares as "".
    assert!(FieldSelector::parse("spec.nodeName=")
        .unwrap_or_default()
        .matches(&fields(&[])));
    assert!(FieldSelector::parse("metadata.name==x")
        .unwrap_or_default()
        .matches(&fields(&[("metadata.name", "x")])));
    assert!(FieldSelector::parse("").unwrap_or_default().is_empty());
}

#[test]
fn field_selector_escaping_round_trips() {
    let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap_or_default();
    assert_eq!(s.exact("metadata.name"), Some(r"a,b=c\d"));
    assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
    assert_eq!(FieldSelector::parse(&s.to_string()), Ok(s));
    assert_eq!(escape_field_value("x=y,z"), r"x\=y\,z");
}

#[test]
fn field_selector_errors_match_upstream() {
    assert_eq!(
        FieldSelector::parse("foo"),
        Err("invalid selector: 'foo'; can't understand 'foo'".into())
    );
    assert_eq!(
        FieldSelector::parse("a=b=c"),
        Err("invalid field selector: unescaped character in value: 61".into())
    );
    assert_eq!(
        FieldSelector::parse(r"a=b\x"),
        Err(r"invalid field selector: invalid escape sequence: \x".into())
    );
    assert_eq!(
        FieldSelector::parse(r"a=b\"),
        Err(r"invalid field selector: invalid escape sequence: \".into())
    );
}
