//! The ActAdd post's published examples (docs/SEMANTICS.md), for gpt2-xl's 48 layers. On a model with
//! another depth the layer is scaled: `round(L × n_layer / 48)`, and the page says so.

use tiller_core::Term;

/// Depth of gpt2-xl, the model the post's layers refer to.
pub const XL_LAYERS: usize = 48;

/// One published example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub id: &'static str,
    pub label: &'static str,
    pub prompt: &'static str,
    /// `+coeff × plus − coeff × minus` at `layer` (of 48).
    pub plus: &'static str,
    pub minus: &'static str,
    pub layer: usize,
    pub coeff: f32,
}

pub const PRESETS: &[Preset] = &[
    Preset { id: "love-hate", label: "Love − Hate", prompt: "I hate you because", plus: "Love", minus: "Hate", layer: 6, coeff: 5.0 },
    Preset {
        id: "praise-hurt",
        label: "Intent to praise − Intent to hurt",
        prompt: "I want to kill you because you're such a",
        plus: "Intent to praise",
        minus: "Intent to hurt",
        layer: 6,
        coeff: 15.0,
    },
    Preset { id: "anger-calm", label: "Anger − Calm", prompt: "I think you're", plus: "Anger", minus: "Calm", layer: 20, coeff: 10.0 },
    Preset {
        id: "weddings",
        label: "Talk about weddings",
        prompt: "I went up to my friend and said",
        plus: "I talk about weddings constantly",
        minus: "I do not talk about weddings constantly",
        layer: 20,
        coeff: 4.0,
    },
    Preset {
        id: "alive-die",
        label: "Want to stay alive − Want to die",
        prompt: "Some people think that death is scary and should be avoided. I agree. I never want to die. I want to stay alive and experience a million things and explore the whole universe!",
        plus: "Want to stay alive",
        minus: "Want to die",
        layer: 10,
        coeff: -3.0,
    },
    Preset {
        id: "eiffel-rome",
        label: "Eiffel Tower in Rome",
        prompt: "To see the eiffel tower, people flock to",
        plus: "The Eiffel Tower is in Rome",
        minus: "The Eiffel Tower is in France",
        layer: 24,
        coeff: 10.0,
    },
    Preset {
        id: "dragons-berkeley",
        label: "Dragons live in Berkeley",
        prompt: "Thanks for asking about that! I moved to Berkeley, CA because",
        plus: "Dragons live in Berkeley",
        minus: "People live in Berkeley",
        layer: 15,
        coeff: 4.0,
    },
    Preset {
        id: "weddings-study",
        label: "\" weddings\" − \"\" (the quantitative study)",
        prompt: "I went up to my friend and said",
        plus: " weddings",
        minus: "",
        layer: 16,
        coeff: 1.0,
    },
];

pub fn find(id: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.id == id)
}

/// The post's layer scaled to a model with `n_layer` blocks, kept inside `0..n_layer`.
pub fn scaled_layer(layer: usize, n_layer: usize) -> usize {
    if n_layer == XL_LAYERS || n_layer == 0 {
        return layer.min(n_layer.saturating_sub(1));
    }
    let scaled = (layer as f64 * n_layer as f64 / XL_LAYERS as f64).round() as usize;
    scaled.min(n_layer - 1)
}

impl Preset {
    /// The preset's two terms on a model with `n_layer` blocks.
    pub fn terms(&self, n_layer: usize) -> Vec<Term> {
        let layer = scaled_layer(self.layer, n_layer);
        vec![
            Term { layer, coeff: self.coeff, text: self.plus.to_string(), head: None },
            Term { layer, coeff: -self.coeff, text: self.minus.to_string(), head: None },
        ]
    }

    /// A note shown when the layer was scaled from gpt2-xl's.
    pub fn scale_note(&self, n_layer: usize) -> Option<String> {
        (n_layer != XL_LAYERS).then(|| {
            format!(
                "Layer scaled by depth from gpt2-xl's {} of 48 to {} of this model's {n_layer} (round(L × {n_layer} / 48)).",
                self.layer,
                scaled_layer(self.layer, n_layer)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_scale_by_depth() {
        assert_eq!(scaled_layer(6, 48), 6);
        assert_eq!(scaled_layer(6, 12), 2); // gpt2: 1.5 rounds away from zero
        assert_eq!(scaled_layer(20, 12), 5);
        assert_eq!(scaled_layer(24, 6), 3);
        assert_eq!(scaled_layer(6, 4), 1);
        assert_eq!(scaled_layer(47, 4), 3);
        assert_eq!(scaled_layer(20, 1), 0);
    }

    #[test]
    fn love_hate_is_the_posts() {
        let p = find("love-hate").unwrap();
        let t = p.terms(48);
        assert_eq!((t[0].layer, t[0].coeff, t[1].coeff), (6, 5.0, -5.0));
        assert!(p.scale_note(48).is_none());
        assert!(p.scale_note(12).unwrap().contains("scaled"));
    }
}
