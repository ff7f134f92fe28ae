//! What a step may ask for, checked once (`StepPlan`) for every engine: a capture past the
//! model's depth, an empty sequence whose last logits are asked for and a slot named twice are
//! refused with a sentence, before any work, so the caches are left exactly as they were.

use pollster::block_on;
use tiller_core::golden::load_fixture;
use tiller_core::{Backend, Capture, LogitRows, SeqStep, Site, StepRequest};

fn step(seqs: Vec<(usize, Vec<u32>)>, capture: Option<(usize, Site)>, logits: LogitRows) -> StepRequest {
    StepRequest {
        seqs: seqs.into_iter().map(|(slot, tokens)| SeqStep { slot, tokens }).collect(),
        injections: vec![],
        captures: capture.map(|(l, s)| Capture::all(l, s)).into_iter().collect(),
        logits,
    }
}

#[test]
fn refused_steps_leave_the_caches_as_they_were() {
    for name in ["tiny-gpt2", "tiny-llama"] {
        let f = load_fixture(name);
        let (mut m, _) = f.cpu_model();
        let depth = m.config().n_layer;
        m.reset(2, 16).unwrap();
        let prompt = step(vec![(0, vec![1, 2, 3]), (1, vec![4, 5])], None, LogitRows::Last);
        let before = block_on(m.step(&prompt)).unwrap().logits;
        let lens = (m.slot_len(0), m.slot_len(1));
        let cases = [
            ("capture past the depth", step(vec![(0, vec![7])], Some((depth, Site::ResidPre)), LogitRows::None), "layer"),
            ("empty sequence", step(vec![(0, vec![7]), (1, vec![])], None, LogitRows::Last), "no tokens"),
            ("duplicate slot", step(vec![(0, vec![7]), (0, vec![8])], None, LogitRows::Last), "twice"),
            ("missing slot", step(vec![(2, vec![7])], None, LogitRows::Last), "does not exist"),
        ];
        for (what, req, says) in cases {
            let e = block_on(m.step(&req)).expect_err(what).to_string();
            assert!(e.contains(says), "{name} {what}: {e}");
            assert_eq!((m.slot_len(0), m.slot_len(1)), lens, "{name} {what}: the caches moved");
        }
        // The caches still hold the prompt: the next token decodes as it would have.
        let next = step(vec![(0, vec![9]), (1, vec![9])], None, LogitRows::Last);
        let after = block_on(m.step(&next)).unwrap().logits;
        m.reset(2, 16).unwrap();
        assert_eq!(block_on(m.step(&prompt)).unwrap().logits, before);
        assert_eq!(block_on(m.step(&next)).unwrap().logits, after, "{name}: a refused step changed what follows");
    }
}
