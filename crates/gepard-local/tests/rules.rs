//! `builtin/rules` on hand-made reflective records shaped like gepard's recipe feedback.

use gepard_gepa::{ProposeError, Proposer, ReflectiveRecord};
use gepard_llm::ChatModel;
use gepard_local::{propose_rules, RulesProposer, MAX_RULES_CHARS, RULES_HEADING};

fn record(input: &str, got: &str, expected: &str) -> ReflectiveRecord {
    let feedback = if got == expected {
        format!("Correct: the answer is exactly '{expected}'.")
    } else {
        format!("Incorrect. Expected exactly '{expected}' and nothing else; got '{got}'.")
    };
    ReflectiveRecord {
        inputs: input.to_owned(),
        generated_outputs: got.to_owned(),
        feedback,
    }
}

fn sentiment_batch() -> Vec<ReflectiveRecord> {
    vec![
        record(
            "The film was a waste of two hours.",
            "Negative.",
            "negative",
        ),
        record(
            "I loved every minute of it.",
            "The sentiment of this review is positive.",
            "positive",
        ),
        record("It was fine, nothing special.", "neutral", "neutral"),
        record("Terrible acting, worse plot.", "positive", "negative"),
    ]
}

#[test]
fn it_names_the_label_set_inferred_from_the_expected_answers() {
    let text = propose_rules("Classify the sentiment.", &sentiment_batch()).unwrap();
    assert!(text.starts_with("Classify the sentiment.\n\n"), "{text}");
    assert!(text.contains(RULES_HEADING));
    assert!(
        text.contains(r#"Allowed answers: "negative", "neutral", "positive"."#),
        "{text}"
    );
    assert!(text.contains("in lowercase"), "{text}");
}

#[test]
fn it_names_case_extra_words_and_wrong_label_mistakes() {
    let text = propose_rules("Classify the sentiment.", &sentiment_batch()).unwrap();
    assert!(
        text.contains(r#"extra punctuation or spacing ("Negative." instead of "negative")"#)
            || text.contains(r#"wrong capitalization ("Negative." instead of "negative")"#),
        "{text}"
    );
    assert!(text.contains("extra words around the answer"), "{text}");
    assert!(
        text.contains(r#"the wrong answer ("positive" where "negative" was right)"#),
        "{text}"
    );
}

#[test]
fn a_pure_case_mistake_is_called_capitalization() {
    let text = propose_rules("Label it.", &[record("x", "NEGATIVE", "negative")]).unwrap();
    assert!(text.contains("wrong capitalization"), "{text}");
}

#[test]
fn it_includes_worked_examples_from_the_failures_only_as_user_and_assistant_turns() {
    let text = propose_rules("Classify the sentiment.", &sentiment_batch()).unwrap();
    assert!(
        text.contains(
            "\n\nUser: The film was a waste of two hours.\nAssistant: negative\n\n\
             User: I loved every minute of it.\nAssistant: positive\n\n\
             User: Terrible acting, worse plot.\nAssistant: negative"
        ),
        "{text}"
    );
    // The correct row teaches nothing new.
    assert!(!text.contains("It was fine"), "{text}");
}

#[test]
fn with_worked_examples_the_instruction_ends_on_the_last_expected_reply() {
    let text = propose_rules("Classify the sentiment.", &sentiment_batch()).unwrap();
    assert!(
        text.ends_with("User: Terrible acting, worse plot.\nAssistant: negative"),
        "{text}"
    );
    assert!(!text.contains("Examples:"), "{text}");
}

#[test]
fn worked_examples_of_an_earlier_round_are_kept_so_no_answer_loses_its_example() {
    let first = propose_rules(
        "Classify the sentiment.",
        &[record("Awful service.", "Awful.", "negative")],
    )
    .unwrap();
    let second = propose_rules(
        &first,
        &[
            record("Lovely room.", "Nice!", "positive"),
            record("Great food.", "Yum", "positive"),
        ],
    )
    .unwrap();
    assert!(
        second.ends_with(
            "User: Awful service.\nAssistant: negative\n\n\
             User: Lovely room.\nAssistant: positive\n\n\
             User: Great food.\nAssistant: positive"
        ),
        "{second}"
    );
    assert_eq!(
        second.matches("User: Awful service.").count(),
        1,
        "{second}"
    );
}

#[test]
fn at_most_four_worked_examples_are_kept_the_newest_of_each_answer_first() {
    let old: Vec<_> = (0..4)
        .map(|i| record(&format!("bad {i}"), "hm", "negative"))
        .collect();
    let first = propose_rules("Classify.", &old).unwrap();
    assert_eq!(first.matches("\nUser: ").count(), 4, "{first}");
    let new: Vec<_> = (0..3)
        .map(|i| record(&format!("good {i}"), "hm", "positive"))
        .collect();
    let second = propose_rules(&first, &new).unwrap();
    assert_eq!(second.matches("\nUser: ").count(), 4, "{second}");
    // Two of each answer: the newest negatives and the newest positives, oldest first.
    assert!(
        second.ends_with(
            "User: bad 2\nAssistant: negative\n\nUser: bad 3\nAssistant: negative\n\n\
             User: good 1\nAssistant: positive\n\nUser: good 2\nAssistant: positive"
        ),
        "{second}"
    );
}

#[test]
fn a_multi_line_or_long_expected_answer_is_not_shown_as_a_worked_example() {
    let long = "word ".repeat(60);
    let text = propose_rules(
        "Answer the question.",
        &[
            record("q1", "no", "first line\nsecond line"),
            record("q2", "no", long.trim()),
        ],
    )
    .unwrap();
    assert!(!text.contains("User: "), "{text}");
}

#[test]
fn the_same_input_always_gives_the_same_instruction() {
    let a = propose_rules("Classify the sentiment.", &sentiment_batch()).unwrap();
    let b = propose_rules("Classify the sentiment.", &sentiment_batch()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_second_round_replaces_the_section_and_keeps_earlier_labels() {
    let first = propose_rules("Classify the sentiment.", &sentiment_batch()).unwrap();
    let later = vec![record("Meh.", "mixed feelings", "mixed")];
    let second = propose_rules(&first, &later).unwrap();
    assert_eq!(second.matches(RULES_HEADING).count(), 1, "{second}");
    assert!(second.starts_with("Classify the sentiment.\n\n"));
    assert!(
        second.contains(r#"Allowed answers: "mixed", "negative", "neutral", "positive"."#),
        "{second}"
    );
}

#[test]
fn the_rules_section_stays_bounded_however_long_the_inputs() {
    let long = "word ".repeat(2000);
    let batch: Vec<_> = (0..40)
        .map(|i| record(&long, &format!("I think it is {i}"), &format!("label{i}")))
        .collect();
    let text = propose_rules("Do it.", &batch).unwrap();
    let section = &text[text.find(RULES_HEADING).unwrap()..];
    assert!(
        section.chars().count() <= MAX_RULES_CHARS,
        "{}",
        section.len()
    );
}

#[test]
fn numeric_answers_get_a_digits_only_rule() {
    let text = propose_rules(
        "Solve it.",
        &[
            record("2+2", "The answer is 4.", "4"),
            record("3*3", "9", "9"),
        ],
    )
    .unwrap();
    assert!(text.contains("write only its digits"), "{text}");
}

#[test]
fn unparsed_feedback_is_quoted_briefly_rather_than_ignored() {
    let r = ReflectiveRecord {
        inputs: "q".into(),
        generated_outputs: "a".into(),
        feedback: "The answer must mention the refund policy.".into(),
    };
    let text = propose_rules("Help the customer.", &[r]).unwrap();
    assert!(
        text.contains("Feedback to heed: The answer must mention the refund policy."),
        "{text}"
    );
}

#[tokio::test]
async fn with_no_examples_the_proposal_is_rejected() {
    let result = RulesProposer::new().propose("Do it.", &[]).await;
    assert!(matches!(result, Err(ProposeError::Rejected(_))));
}

#[tokio::test]
async fn a_batch_with_nothing_new_is_rejected_instead_of_repeating_the_instruction() {
    let batch = vec![record("Good.", "positive", "positive")];
    let first = RulesProposer::new()
        .propose("Classify.", &batch)
        .await
        .unwrap();
    let again = RulesProposer::new().propose(&first.text, &batch).await;
    assert!(matches!(again, Err(ProposeError::Rejected(_))), "{again:?}");
}

#[test]
fn the_reflection_prompt_is_read_back_into_the_instruction_and_examples() {
    let batch = sentiment_batch();
    let prompt = gepard_gepa::reflection_prompt("Classify the sentiment.\nBe brief.", &batch);
    let (current, examples) = gepard_local::parse_reflection_prompt(&prompt).unwrap();
    assert_eq!(current, "Classify the sentiment.\nBe brief.");
    assert_eq!(examples, batch);
}

#[tokio::test]
async fn builtin_rules_resolves_as_a_chat_model_whose_fenced_answer_is_the_rules_proposal() {
    use gepard_llm::{ChatRequest, Message, ModelRegistry};
    let registry = ModelRegistry::empty();
    gepard_local::register_builtin(&registry);
    let model = registry.resolve("builtin/rules").unwrap();
    let batch = sentiment_batch();
    let prompt = gepard_gepa::reflection_prompt("Classify the sentiment.", &batch);
    let answer = model
        .chat(&ChatRequest::new(vec![Message::user(prompt)]))
        .await
        .unwrap();
    let text = gepard_gepa::extract_fenced(answer.content.as_deref().unwrap()).unwrap();
    assert_eq!(
        text,
        propose_rules("Classify the sentiment.", &batch).unwrap()
    );
    assert!(registry.resolve("builtin/other").is_err());
}

#[tokio::test]
async fn builtin_rules_answers_unfenced_when_it_cannot_read_the_prompt() {
    use gepard_llm::{ChatRequest, Message};
    let answer = gepard_local::RulesChatModel
        .chat(&ChatRequest::new(vec![Message::user("Hello?")]))
        .await
        .unwrap();
    assert!(gepard_gepa::extract_fenced(answer.content.as_deref().unwrap()).is_err());
}

#[test]
fn without_worked_examples_the_instruction_ends_by_restating_the_allowed_answers() {
    let batch = vec![
        record("Good.", "positive", "positive"),
        record("Bad.", "negative", "negative"),
    ];
    let text = propose_rules("Classify the sentiment.", &batch).unwrap();
    assert!(
        text.ends_with(
            "Reply with exactly one word or phrase: negative or positive. Nothing else."
        ),
        "{text}"
    );
}
