//! Episodes, the Frozen JSON format and the rendered prompt, end to end.

use std::collections::HashSet;
use std::path::Path;

use prompt::{
    read_frozen, read_frozen_reader, sample_episodes, write_frozen, write_frozen_writer, Episode,
    EpisodeConfig, FewShotContext, FrozenRecord, Pool, PromptError, Shot, Templates,
};

fn templates() -> Templates {
    Templates::from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts")).unwrap()
}

fn shot(image: &str, label: &str) -> Shot {
    Shot {
        image: image.into(),
        label: label.into(),
    }
}

/// Words standing in for SPAE tokens of each image.
fn words(image: &str) -> String {
    match image {
        "n02129165_1.jpg" => "mane savanna".into(),
        "n04522168_7.jpg" => "clay flower".into(),
        "n02129165_9.jpg" => "roar grass".into(),
        other => format!("words-of-{other}"),
    }
}

fn two_way_one_shot() -> Episode {
    Episode {
        classes: vec!["lion".into(), "vase".into()],
        support: vec![
            shot("n02129165_1.jpg", "lion"),
            shot("n04522168_7.jpg", "vase"),
        ],
        query: shot("n02129165_9.jpg", "lion"),
        induction: true,
    }
}

#[test]
fn a_two_way_one_shot_episode_renders_to_the_fixture() {
    let ctx = FewShotContext::from_episode(&two_way_one_shot(), words);
    let got = templates().render("few_shot_classification", &ctx).unwrap();
    let want = include_str!("fixtures/two_way_one_shot.txt");
    assert_eq!(got, want);
}

#[test]
fn the_content_free_prompt_differs_only_in_the_query() {
    let ctx = FewShotContext::from_episode(&two_way_one_shot(), words);
    let t = templates();
    let real = t.render("few_shot_classification", &ctx).unwrap();
    let cf = t
        .render(
            "few_shot_classification",
            &ctx.with_content_free_query("N/A"),
        )
        .unwrap();
    assert_eq!(cf, real.replace("roar grass This is a", "N/A This is a"));
    let no_induction = Episode {
        induction: false,
        ..two_way_one_shot()
    };
    let ctx = FewShotContext::from_episode(&no_induction, words);
    let text = t.render("few_shot_classification", &ctx).unwrap();
    assert_eq!(text, real.replace("Answer with lion or vase.\n", ""));
}

#[test]
fn read_records_validate_and_a_leaky_one_is_caught() {
    let list = r#"[
      {"image_1": "a", "caption_1": "This is a lion.", "image_2": "b", "caption_2": "This is a vase.", "question_image": "c", "question": "This is a", "answer": "vase"},
      {"image_1": "a", "caption_1": "This is a lion.", "image_2": "c", "caption_2": "This is a vase.", "question_image": "c", "question": "This is a", "answer": "vase"}
    ]"#;
    let records = read_frozen_reader(list.as_bytes()).unwrap();
    records[0].to_episode(true).validate(0).unwrap();
    let err = records[1].to_episode(true).validate(1).unwrap_err();
    assert!(
        matches!(err, PromptError::BadEpisode { episode: 1, .. }),
        "{err}"
    );
}

#[test]
fn repeats_and_shots_multiply_the_support_lines() {
    let labels: Vec<u32> = (0..50).map(|i| i % 5).collect();
    let names: Vec<String> = ["lion", "vase", "dog", "owl", "bus"]
        .map(String::from)
        .to_vec();
    let pool = Pool::new(&labels, &names).unwrap();
    for (way, shots, repeats) in [(2, 1, 0), (2, 3, 1), (5, 5, 0), (5, 1, 3), (2, 5, 5)] {
        let cfg = EpisodeConfig {
            way,
            shots,
            repeats,
            induction: true,
            seed: 7,
            episodes: 4,
        };
        for ep in sample_episodes(&pool, &cfg).unwrap() {
            let ctx = FewShotContext::from_episode(&ep, words);
            let text = templates().render("few_shot_classification", &ctx).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            // induction + support + query
            assert_eq!(lines.len(), 1 + way * shots * (repeats + 1) + 1, "{text}");
            assert!(lines[0].starts_with("Answer with "), "{text}");
            let support_lines = lines[1..lines.len() - 1].iter();
            assert!(support_lines
                .clone()
                .all(|l| l.contains(" This is a ") && l.ends_with('.')));
            assert!(lines[lines.len() - 1].ends_with(" This is a"));
        }
    }
}

#[test]
fn no_query_leaks_into_its_support_set_over_many_seeds() {
    // Uneven classes of 12 to 20 items, 8 classes.
    let mut labels = Vec::new();
    for c in 0..8u32 {
        labels.extend(std::iter::repeat_n(c, 12 + c as usize));
    }
    let names: Vec<String> = (0..8).map(|c| format!("class{c}")).collect();
    let pool = Pool::new(&labels, &names).unwrap();
    let settings = [
        (2, 1, 0),
        (2, 3, 0),
        (2, 5, 0),
        (2, 1, 1),
        (2, 1, 3),
        (2, 1, 5),
        (5, 1, 0),
        (5, 3, 0),
        (5, 5, 0),
        (5, 1, 5),
    ];
    let mut episodes = 0;
    for (way, shots, repeats) in settings {
        for seed in 0..500u64 {
            let cfg = EpisodeConfig {
                way,
                shots,
                repeats,
                induction: seed % 2 == 0,
                seed,
                episodes: 2,
            };
            for ep in sample_episodes(&pool, &cfg).unwrap() {
                episodes += 1;
                ep.validate(episodes).unwrap();
                let classes: HashSet<&String> = ep.classes.iter().collect();
                assert_eq!(classes.len(), way, "{ep:?}");
                assert_eq!(ep.support.len(), way * shots * (repeats + 1));
                assert!(ep.support.iter().all(|s| classes.contains(&s.label)));
                assert!(classes.contains(&ep.query.label));
                assert!(
                    ep.support.iter().all(|s| s.image != ep.query.image),
                    "{ep:?}"
                );
                let once = &ep.support[..way * shots];
                let distinct: HashSet<&String> = once.iter().map(|s| &s.image).collect();
                assert_eq!(distinct.len(), way * shots, "{ep:?}");
                for c in &ep.classes {
                    assert_eq!(once.iter().filter(|s| &s.label == c).count(), shots);
                }
                // The image is the pool index: its label must be the shot's label.
                for s in once.iter().chain([&ep.query]) {
                    let item: usize = s.image.parse().unwrap();
                    assert_eq!(names[labels[item] as usize], s.label);
                }
            }
        }
    }
    assert_eq!(episodes, 10 * 500 * 2);
}

#[test]
fn the_first_episode_of_seed_zero_is_pinned() {
    // Guards bit-for-bit reproducibility (a change of rand, or of the draw order, shows here).
    let labels: Vec<u32> = (0..20).map(|i| i % 4).collect();
    let names: Vec<String> = ["lion", "vase", "dog", "owl"].map(String::from).to_vec();
    let pool = Pool::new(&labels, &names).unwrap();
    let cfg = EpisodeConfig {
        way: 2,
        shots: 1,
        repeats: 1,
        induction: true,
        seed: 0,
        episodes: 1,
    };
    let ep = &sample_episodes(&pool, &cfg).unwrap()[0];
    let got = format!(
        "{:?} | {} | {}:{}",
        ep.classes,
        ep.support
            .iter()
            .map(|s| format!("{}:{}", s.image, s.label))
            .collect::<Vec<_>>()
            .join(" "),
        ep.query.image,
        ep.query.label
    );
    assert_eq!(got, PINNED);
}

const PINNED: &str = r#"["lion", "dog"] | 0:lion 14:dog 0:lion 14:dog | 12:lion"#;

#[test]
fn frozen_json_round_trips() {
    let labels: Vec<u32> = (0..30).map(|i| i % 3).collect();
    let names: Vec<String> = ["lion", "vase", "owl"].map(String::from).to_vec();
    let images: Vec<String> = (0..30).map(|i| format!("img/{i:03}.jpg")).collect();
    let pool = Pool::new(&labels, &names)
        .unwrap()
        .with_images(images)
        .unwrap();
    let cfg = EpisodeConfig {
        way: 2,
        shots: 3,
        repeats: 1,
        induction: true,
        seed: 5,
        episodes: 6,
    };
    let episodes = sample_episodes(&pool, &cfg).unwrap();
    let records: Vec<FrozenRecord> = episodes.iter().map(FrozenRecord::from_episode).collect();
    let dir = std::env::temp_dir().join(format!("prompt-frozen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("real_name_mi.json");
    write_frozen(&path, &records).unwrap();
    let back = read_frozen(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(back, records);
    for (r, ep) in back.iter().zip(&episodes) {
        let again = r.to_episode(true);
        assert_eq!(again.support, ep.support);
        assert_eq!(again.query, ep.query);
        let mut want = ep.classes.clone();
        let mut got = again.classes.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
    }
    let first = &records[0];
    assert_eq!(
        first.support[0].1,
        format!("This is a {}.", episodes[0].support[0].label)
    );
    assert_eq!(first.question, "This is a");
}

#[test]
fn jsonl_with_extra_fields_reads() {
    let jsonl = r#"{"image_1": "a.jpg", "caption_1": "This is a lion.", "image_2": "b.jpg", "caption_2": "This is an owl.", "question_image": "c.jpg", "question": "This is a", "answer": "owl", "question_id": 17, "extra": {"x": [1]}}

{"image_1": 3, "caption_1": "This is a vase.", "question_image": 4, "question": "This is a", "answer": "vase"}
"#;
    let records = read_frozen_reader(jsonl.as_bytes()).unwrap();
    assert_eq!(records.len(), 2);
    let ep = records[0].to_episode(true);
    assert_eq!(ep.classes, ["lion", "owl"]);
    assert_eq!(ep.query, shot("c.jpg", "owl"));
    assert_eq!(
        records[1].support,
        [("3".to_string(), "This is a vase.".to_string())]
    );
    // The list form of the same records reads the same.
    let list = format!(
        "[{}]",
        jsonl
            .lines()
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(read_frozen_reader(list.as_bytes()).unwrap(), records);
    let mut out = Vec::new();
    write_frozen_writer(&mut out, &records).unwrap();
    assert_eq!(read_frozen_reader(out.as_slice()).unwrap(), records);
}

#[test]
fn a_record_missing_answer_is_named() {
    let list = r#"[
      {"image_1": "a", "caption_1": "This is a lion.", "question_image": "q", "question": "This is a", "answer": "lion"},
      {"image_1": "a", "caption_1": "This is a lion.", "question_image": "q", "question": "This is a"}
    ]"#;
    let err = read_frozen_reader(list.as_bytes()).unwrap_err();
    assert!(
        matches!(err, PromptError::MissingField { record: 1, ref field } if field == "answer"),
        "{err}"
    );
    assert_eq!(err.to_string(), "record 1: missing field answer");
    let no_caption =
        r#"{"image_1": "a", "question_image": "q", "question": "This is a", "answer": "lion"}"#;
    let err = read_frozen_reader(no_caption.as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "record 0: missing field caption_1");
    let bad = "{\"image_1\": \"a\"\n";
    let err = read_frozen_reader(bad.as_bytes()).unwrap_err();
    assert!(err.to_string().starts_with("line 1: invalid JSON"), "{err}");
    let wrong_type = r#"[{"image_1": "a", "caption_1": ["x"], "question_image": "q", "question": "q", "answer": "a"}]"#;
    let err = read_frozen_reader(wrong_type.as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "record 0: field caption_1 is not a string");
}

#[test]
fn a_missing_file_names_its_path() {
    let err = read_frozen(Path::new("/nonexistent/real_name_mi.json")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/real_name_mi.json"),
        "{err}"
    );
}

/// Items in groups (four drawing styles of each concept): no support item shares the query's
/// group, every episode still has its way x shots support items, and a class with too few items
/// outside the query's group is an error that names it.
#[test]
fn grouped_pools_keep_the_query_group_out_of_the_support_set() {
    let (mut labels, mut groups) = (Vec::new(), Vec::new());
    for c in 0..6u32 {
        for style in 0..4u32 {
            labels.push(c);
            groups.push(style);
        }
    }
    let names: Vec<String> = (0..6).map(|c| format!("concept{c}")).collect();
    let pool = Pool::new(&labels, &names)
        .unwrap()
        .with_groups(groups.clone())
        .unwrap();
    let group_of = |image: &str| groups[image.parse::<usize>().unwrap()];
    for (way, shots) in [(2, 1), (5, 1), (2, 3), (5, 3)] {
        let cfg = EpisodeConfig {
            way,
            shots,
            repeats: 0,
            induction: true,
            seed: 3,
            episodes: 50,
        };
        let episodes = sample_episodes(&pool, &cfg).unwrap();
        let mut query_groups = std::collections::BTreeSet::new();
        for ep in &episodes {
            assert_eq!(ep.support.len(), way * shots);
            ep.validate(0).unwrap();
            let q = group_of(&ep.query.image);
            query_groups.insert(q);
            assert!(ep.support.iter().all(|s| group_of(&s.image) != q), "{ep:?}");
        }
        assert_eq!(
            query_groups.len(),
            4,
            "every style is a query style somewhere"
        );
    }
    let four_shots = EpisodeConfig {
        way: 2,
        shots: 4,
        repeats: 0,
        induction: true,
        seed: 0,
        episodes: 1,
    };
    // Four items per class cannot give four shots and a query.
    assert!(sample_episodes(&pool, &four_shots).is_err());
    // Enough items per class, but not outside the group of a query in group 0.
    let pool = Pool::new(&[0, 0, 0, 1, 1, 1], &names[..2])
        .unwrap()
        .with_groups(vec![0, 0, 1, 0, 0, 1])
        .unwrap();
    let cfg = EpisodeConfig {
        way: 2,
        shots: 2,
        repeats: 0,
        induction: true,
        seed: 0,
        episodes: 20,
    };
    let err = sample_episodes(&pool, &cfg).unwrap_err().to_string();
    assert!(err.contains("outside the query's group"), "{err}");
    assert!(Pool::new(&[0, 1], &names[..2])
        .unwrap()
        .with_groups(vec![0])
        .is_err());
}
