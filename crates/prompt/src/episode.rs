//! Episode sampling for few-shot classification, the protocol of Frozen (Tsimpoukelli et al.
//! 2021), "Real-Name mini-ImageNet" (SPAE paper, Sec. 4.1 and Table 1).
//!
//! An episode draws `way` distinct classes, `shots` distinct support items per class and one
//! query item from one of those classes that is never one of its support items (a published peer
//! shipped exactly that leak). The support set is shuffled once and appears `repeats + 1` times.
//!
//! A pool whose items come in groups (the drawing styles of one concept, say) can keep the
//! query's group out of the support set ([`Pool::with_groups`]): then recognising the query
//! takes knowing the concept, not matching its pixels to a support image of the same style.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::{index, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::{PromptError, Result};

/// A labelled pool: `labels[i]` is the class of item `i`, `class_names[label]` its name.
#[derive(Clone)]
pub struct Pool {
    labels: Vec<u32>,
    class_names: Vec<String>,
    images: Option<Vec<String>>,
    /// Each item's group; the query's group is kept out of the support set.
    groups: Option<Vec<u32>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("items", &self.labels.len())
            .field("classes", &self.class_names.len())
            .field("named_images", &self.images.is_some())
            .finish()
    }
}

impl Pool {
    /// Every label must name a class; an item's image is its index (`"17"`) unless
    /// [`Pool::with_images`] names it.
    pub fn new(labels: &[u32], class_names: &[String]) -> Result<Self> {
        for (item, &label) in labels.iter().enumerate() {
            if label as usize >= class_names.len() {
                return Err(PromptError::LabelOutOfRange {
                    item,
                    label,
                    classes: class_names.len(),
                });
            }
        }
        Ok(Self {
            labels: labels.to_vec(),
            class_names: class_names.to_vec(),
            images: None,
            groups: None,
        })
    }

    /// Put each item in a group (one per label); episodes then draw their support items from
    /// groups other than the query's.
    pub fn with_groups(mut self, groups: Vec<u32>) -> Result<Self> {
        if groups.len() != self.labels.len() {
            return Err(PromptError::Config(format!(
                "{} groups for {} labelled items",
                groups.len(),
                self.labels.len()
            )));
        }
        self.groups = Some(groups);
        Ok(self)
    }

    /// Name each item's image (a path or an id), one per label.
    pub fn with_images(mut self, images: Vec<String>) -> Result<Self> {
        if images.len() != self.labels.len() {
            return Err(PromptError::Config(format!(
                "{} images for {} labelled items",
                images.len(),
                self.labels.len()
            )));
        }
        self.images = Some(images);
        Ok(self)
    }

    fn image(&self, item: usize) -> String {
        match &self.images {
            Some(images) => images[item].clone(),
            None => item.to_string(),
        }
    }
}

/// The Frozen protocol's settings; one value per table cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpisodeConfig {
    /// Classes per episode (2 or 5 in the paper).
    pub way: usize,
    /// Inner shots: distinct support items per class (1, 3, 5).
    pub shots: usize,
    /// Extra copies of the whole support set (0, 1, 3, 5).
    pub repeats: usize,
    /// Whether the prompt opens with "Answer with lion or vase."
    pub induction: bool,
    pub seed: u64,
    pub episodes: usize,
}

/// One support or query item: its image (path, id, or pool index) and its class name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shot {
    pub image: String,
    pub label: String,
}

/// One few-shot episode, in prompt order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// The episode's class names, in the order the induction line lists them.
    pub classes: Vec<String>,
    /// Support items in prompt order, the repeats included.
    pub support: Vec<Shot>,
    pub query: Shot,
    pub induction: bool,
}

impl Episode {
    /// The class name the model should answer.
    pub fn answer(&self) -> &str {
        &self.query.label
    }

    /// Index of the answer in [`Episode::classes`] (the target of a constrained choice).
    pub fn answer_index(&self) -> Option<usize> {
        self.classes.iter().position(|c| *c == self.query.label)
    }

    /// Checks an episode read from elsewhere (e.g. a Frozen file) keeps the protocol: a
    /// non-empty support set, labels among the classes, and the query image not in its own
    /// support set (the leak a published peer shipped). `index` names the episode in the error.
    pub fn validate(&self, index: usize) -> Result<()> {
        let bad = |message: String| PromptError::BadEpisode {
            episode: index,
            message,
        };
        if self.support.is_empty() {
            return Err(bad("empty support set".into()));
        }
        if let Some(s) = self.support.iter().find(|s| s.image == self.query.image) {
            return Err(bad(format!(
                "query image {} is also a support item (labelled {})",
                s.image, s.label
            )));
        }
        for shot in self.support.iter().chain([&self.query]) {
            if !self.classes.contains(&shot.label) {
                return Err(bad(format!(
                    "label {} of {} is not among the classes {:?}",
                    shot.label, shot.image, self.classes
                )));
            }
        }
        Ok(())
    }
}

/// splitmix64 (Steele et al. 2014): episode `i`'s seed depends on (`seed`, `i`) only, so
/// episode `i` is the same whether 10 or 10,000 episodes are drawn.
fn episode_seed(seed: u64, episode: u64) -> u64 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    mix(seed ^ mix(episode))
}

/// Draw `cfg.episodes` episodes from `pool`, deterministically from `cfg.seed`.
///
/// Every class that has items must hold at least `shots + 1` of them (a class too small for its
/// support and a query is an error, not silently skipped), and at least `way` classes must have items.
pub fn sample_episodes(pool: &Pool, cfg: &EpisodeConfig) -> Result<Vec<Episode>> {
    if cfg.way < 2 {
        return Err(PromptError::Config(format!(
            "way is {}, needs at least 2",
            cfg.way
        )));
    }
    if cfg.shots == 0 {
        return Err(PromptError::Config("shots is 0, needs at least 1".into()));
    }
    // BTreeMap: classes in label order, so the draw does not depend on hash order.
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (item, &label) in pool.labels.iter().enumerate() {
        by_class.entry(label).or_default().push(item);
    }
    let need = cfg.shots + 1;
    for (&label, items) in &by_class {
        if items.len() < need {
            return Err(PromptError::TooFewItems {
                class: pool.class_names[label as usize].clone(),
                have: items.len(),
                need,
                shots: cfg.shots,
            });
        }
    }
    if by_class.len() < cfg.way {
        return Err(PromptError::TooFewClasses {
            have: by_class.len(),
            way: cfg.way,
        });
    }
    let classes: Vec<(u32, Vec<usize>)> = by_class.into_iter().collect();
    (0..cfg.episodes)
        .map(|i| {
            let mut rng = StdRng::seed_from_u64(episode_seed(cfg.seed, i as u64));
            match &pool.groups {
                None => Ok(draw_one(pool, &classes, cfg, &mut rng)),
                Some(groups) => draw_apart(pool, groups, &classes, cfg, &mut rng),
            }
        })
        .collect()
}

/// [`draw_one`] for a pool in groups: the query first, then every class's support items from
/// the groups other than the query's.
fn draw_apart(
    pool: &Pool,
    groups: &[u32],
    classes: &[(u32, Vec<usize>)],
    cfg: &EpisodeConfig,
    rng: &mut StdRng,
) -> Result<Episode> {
    let mut chosen: Vec<usize> = index::sample(rng, classes.len(), cfg.way).into_vec();
    chosen.shuffle(rng);
    let query_class = rng.gen_range(0..cfg.way);
    let (query_label, query_items) = &classes[chosen[query_class]];
    let query_item = query_items[rng.gen_range(0..query_items.len())];
    let query_group = groups[query_item];
    let mut support = Vec::with_capacity(cfg.way * cfg.shots);
    for &c in &chosen {
        let (label, items) = &classes[c];
        let others: Vec<usize> = items
            .iter()
            .copied()
            .filter(|&i| groups[i] != query_group)
            .collect();
        let name = &pool.class_names[*label as usize];
        if others.len() < cfg.shots {
            return Err(PromptError::TooFewItems {
                class: format!("{name} (outside the query's group {query_group})"),
                have: others.len(),
                need: cfg.shots,
                shots: cfg.shots,
            });
        }
        for p in index::sample(rng, others.len(), cfg.shots) {
            support.push(Shot {
                image: pool.image(others[p]),
                label: name.clone(),
            });
        }
    }
    support.shuffle(rng);
    let once = support.len();
    for _ in 0..cfg.repeats {
        support.extend_from_within(..once);
    }
    Ok(Episode {
        classes: chosen
            .iter()
            .map(|&c| pool.class_names[classes[c].0 as usize].clone())
            .collect(),
        support,
        query: Shot {
            image: pool.image(query_item),
            label: pool.class_names[*query_label as usize].clone(),
        },
        induction: cfg.induction,
    })
}

fn draw_one(
    pool: &Pool,
    classes: &[(u32, Vec<usize>)],
    cfg: &EpisodeConfig,
    rng: &mut StdRng,
) -> Episode {
    let mut chosen: Vec<usize> = index::sample(rng, classes.len(), cfg.way).into_vec();
    chosen.shuffle(rng);
    let query_class = rng.gen_range(0..cfg.way);
    let mut support = Vec::with_capacity(cfg.way * cfg.shots);
    // Always overwritten: `query_class < way`, so the loop below draws the query.
    let mut query = Shot {
        image: String::new(),
        label: String::new(),
    };
    for (k, &c) in chosen.iter().enumerate() {
        let (label, items) = &classes[c];
        let take = if k == query_class {
            cfg.shots + 1
        } else {
            cfg.shots
        };
        // Distinct indices: the query (the extra draw) can never be one of the support items.
        let picked = index::sample(rng, items.len(), take).into_vec();
        let name = &pool.class_names[*label as usize];
        for (j, &p) in picked.iter().enumerate() {
            let shot = Shot {
                image: pool.image(items[p]),
                label: name.clone(),
            };
            if j == cfg.shots {
                query = shot;
            } else {
                support.push(shot);
            }
        }
    }
    support.shuffle(rng);
    let once = support.len();
    for _ in 0..cfg.repeats {
        support.extend_from_within(..once);
    }
    let class_names = chosen
        .iter()
        .map(|&c| pool.class_names[classes[c].0 as usize].clone())
        .collect();
    Episode {
        classes: class_names,
        support,
        query,
        induction: cfg.induction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|c| format!("class{c}")).collect()
    }

    fn cfg(way: usize, shots: usize, repeats: usize, seed: u64) -> EpisodeConfig {
        EpisodeConfig {
            way,
            shots,
            repeats,
            induction: true,
            seed,
            episodes: 3,
        }
    }

    #[test]
    fn a_class_too_small_for_shots_and_query_is_named() {
        // class1 has 3 items: enough for 2 shots + query, not for 3 shots + query.
        let labels = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2];
        let pool = Pool::new(&labels, &names(3)).unwrap();
        assert!(sample_episodes(&pool, &cfg(2, 2, 0, 1)).is_ok());
        let err = sample_episodes(&pool, &cfg(2, 3, 0, 1)).unwrap_err();
        assert!(
            matches!(err, PromptError::TooFewItems { ref class, have: 3, need: 4, .. } if class == "class1"),
            "{err}"
        );
        assert!(err.to_string().contains("class1"), "{err}");
    }

    #[test]
    fn fewer_classes_than_way_is_an_error() {
        let labels = [0, 0, 1, 1, 2, 2];
        let pool = Pool::new(&labels, &names(5)).unwrap();
        let err = sample_episodes(&pool, &cfg(5, 1, 0, 1)).unwrap_err();
        assert!(
            matches!(err, PromptError::TooFewClasses { have: 3, way: 5 }),
            "{err}"
        );
    }

    #[test]
    fn a_label_without_a_class_name_is_an_error() {
        let err = Pool::new(&[0, 3], &names(2)).unwrap_err();
        assert!(err.to_string().contains("item 1"), "{err}");
    }

    #[test]
    fn episode_i_does_not_depend_on_how_many_are_drawn() {
        let labels: Vec<u32> = (0..100).map(|i| i % 10).collect();
        let pool = Pool::new(&labels, &names(10)).unwrap();
        let mut few = cfg(5, 3, 1, 42);
        few.episodes = 4;
        let mut many = few.clone();
        many.episodes = 40;
        let a = sample_episodes(&pool, &few).unwrap();
        let b = sample_episodes(&pool, &many).unwrap();
        assert_eq!(a[..], b[..4]);
        assert_eq!(b, sample_episodes(&pool, &many).unwrap());
        let other = EpisodeConfig { seed: 43, ..many };
        assert_ne!(b, sample_episodes(&pool, &other).unwrap());
    }

    #[test]
    fn validate_catches_a_query_leaked_into_its_support_set() {
        let labels: Vec<u32> = (0..20).map(|i| i % 2).collect();
        let pool = Pool::new(&labels, &names(2)).unwrap();
        let mut ep = sample_episodes(&pool, &cfg(2, 1, 0, 3)).unwrap().remove(0);
        ep.validate(0).unwrap();
        ep.support[1] = ep.query.clone();
        let err = ep.validate(4).unwrap_err();
        assert!(
            err.to_string().starts_with("episode 4: query image"),
            "{err}"
        );
        ep.support.clear();
        assert!(ep.validate(0).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn repeats_copy_the_whole_support_set_in_the_same_order() {
        let labels: Vec<u32> = (0..60).map(|i| i % 6).collect();
        let pool = Pool::new(&labels, &names(6)).unwrap();
        for ep in sample_episodes(&pool, &cfg(5, 3, 3, 9)).unwrap() {
            assert_eq!(ep.support.len(), 5 * 3 * 4);
            let once = &ep.support[..15];
            for copy in ep.support.chunks(15) {
                assert_eq!(copy, once);
            }
        }
    }
}
