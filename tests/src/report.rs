//! The demo's one results table (printed) and its report (markdown beside the ROC plot).

use crate::demo::{DemoResults, EvalRow};
use std::fmt::Write as _;

fn pct(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else {
        format!("{:.1}%", 100.0 * x)
    }
}

fn row<'a>(rows: &'a [EvalRow], model: &str, condition: &str) -> Option<&'a EvalRow> {
    rows.iter()
        .find(|r| r.model == model && r.condition == condition)
}

/// The table printed at the end of `make demo`: the numbers a newcomer judges the system by.
pub fn results_table(r: &DemoResults) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| stage | measure | teacher | student |");
    let _ = writeln!(t, "|---|---|---|---|");
    for cond in ["unmasked", "masked_probe"] {
        let (a, b) = (row(&r.eval, "teacher", cond), row(&r.eval, "student", cond));
        let acc = |x: Option<&EvalRow>| x.map_or("n/a".into(), |x| pct(x.accuracy));
        let tar = |x: Option<&EvalRow>| x.map_or("n/a".into(), |x| pct(x.tar_at_1e3));
        let _ = writeln!(
            t,
            "| verification ({}) | accuracy | {} | {} |",
            cond.replace('_', " "),
            acc(a),
            acc(b)
        );
        let _ = writeln!(
            t,
            "| verification ({}) | TAR@FAR=1e-3 | {} | {} |",
            cond.replace('_', " "),
            tar(a),
            tar(b)
        );
    }
    let th = |c| {
        r.thresholds
            .threshold(c)
            .map_or("n/a".into(), |v| format!("{v:.3}"))
    };
    let _ = writeln!(
        t,
        "| calibration (FAR {:.0e}) | threshold unmasked / masked | | {} / {} |",
        r.thresholds.selected_far,
        th(shared::Condition::Unmasked),
        th(shared::Condition::Masked)
    );
    let _ = writeln!(t, "| export | shipped variant | | {} |", r.shipped_variant);
    let s = &r.unmasked;
    let _ = writeln!(
        t,
        "| edge, {} enrolled | unmasked probes identified | | {}/{} ({}) |",
        r.enrolled,
        s.correct,
        s.probes,
        pct(s.rate(s.correct))
    );
    let s = &r.masked;
    let _ = writeln!(
        t,
        "| edge, {} enrolled | masked probes identified | | {}/{} ({}) |",
        r.enrolled,
        s.correct,
        s.probes,
        pct(s.rate(s.correct))
    );
    let wrong = r.unmasked.false_accepts + r.masked.false_accepts;
    let _ = writeln!(t, "| edge | probes accepted as someone else | | {wrong} |");
    let s = &r.strangers;
    let _ = writeln!(
        t,
        "| edge | stranger probes accepted | | {}/{} |",
        s.false_accepts, s.probes
    );
    let d = &r.door;
    let _ = writeln!(
        t,
        "| door (dry run) | enrolled visitors let in | | {}/{} |",
        d.unlocked_right_person, d.visitors_enrolled
    );
    let _ = writeln!(
        t,
        "| door (dry run) | strangers let in / wrong-person unlocks | | {} / {} |",
        d.strangers_let_in, d.unlocked_wrong_person
    );
    t
}

/// What a reader can expect to see again, and what not.
const REPRODUCIBILITY: &str =
    "What is reproducible: on one machine, the same command with the same \
seed and thread count gives this report again figure for figure (training, evaluation and the edge \
are deterministic there). On another CPU, or with another thread count, libtorch sums in another \
order, training ends at another model, and every figure that depends on the model moves. \
Measured between two runs on 2-core AMD EPYC VMs (2026-11-24, and a fresh clone on 2026-12-01): \
verification accuracies by up to 3.2 points, TAR@FAR=1e-3 by up to 15 points, the calibrated \
thresholds by 0.05, the probes the edge identified by up to 10 of 40 and the enrolled visitors \
the door let in by 5 of 20; strangers let in stayed 0 in both. The checks the tests make do not \
depend on those counts: the edge's decisions equal the calibrated thresholds applied to its own \
scores, and the door decides as `edge identify` did on the same images.";

/// `report.md`: the table, then the evidence behind it.
pub fn markdown(r: &DemoResults, machine: &str, date: &str, command: &str) -> String {
    let mut m = String::new();
    let total: f64 = r.steps.iter().map(|(_, s)| s).sum();
    let _ = writeln!(m, "# maskgate demo report\n");
    let _ = writeln!(
        m,
        "Machine: {machine}. Date: {date}. Wall time {total:.0} s. Reproduce: `{command}`.\n"
    );
    let _ = writeln!(m, "## Results\n\n{}", results_table(r));
    let _ = writeln!(
        m,
        "Synthetic faces ({} training identities x {} images; {} verification pairs of {} held-out \
         identities; {} door people + {} strangers, disjoint from both). Teacher: tiny backbone, \
         ArcFace, unmasked data only, {} steps. Student: same backbone, masks with p = 0.5, MaskInv \
         LG distillation from the frozen teacher, transformer auxiliary loss, USS, {} steps, batch \
         32, seed {}, {} libtorch thread(s) per training.\n",
        r.config.identities,
        r.config.images_per_id,
        r.config.val_pairs,
        r.config.val_identities,
        r.config.door_people,
        r.config.door_strangers,
        r.config.teacher_steps,
        r.config.student_steps,
        r.config.seed,
        r.config.train_threads
    );
    let _ = writeln!(m, "{REPRODUCIBILITY}\n");
    let _ = writeln!(m, "## Verification\n");
    let _ = writeln!(
        m,
        "| model | condition | pairs | accuracy (10-fold) | TAR@FAR=1e-3 |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|");
    for e in &r.eval {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {:.2}% ± {:.2}% | {}{} |",
            e.model,
            e.condition,
            e.pairs,
            100.0 * e.accuracy,
            100.0 * e.accuracy_std,
            pct(e.tar_at_1e3),
            if e.tar_resolution_limited { " †" } else { "" }
        );
    }
    let _ = writeln!(
        m,
        "\n† fewer than 1000 impostor pairs: TAR at zero false accepts, not a measured FAR of 1e-3.\n"
    );
    let _ = writeln!(m, "![ROC of the student](eval/student_roc.png)\n");
    let _ = writeln!(
        m,
        "## Export and quantization\n\n{}",
        r.quantize_table.trim()
    );
    let _ = writeln!(
        m,
        "\nShipped: `{}` ({}) in the signed bundle `{}`.\n",
        r.shipped_model.display(),
        r.shipped_variant,
        r.bundle.display()
    );
    let _ = writeln!(m, "## Calibrated thresholds\n");
    let _ = writeln!(
        m,
        "| condition | target FAR | threshold | measured FAR | TAR | genuine / impostor pairs |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|");
    for p in &r.thresholds.operating_points {
        let _ = writeln!(
            m,
            "| {} | {:.0e} | {:.4} | {:.2e} | {:.3} | {} / {} |",
            p.condition,
            p.target_far,
            p.threshold,
            p.measured_far,
            p.measured_tar,
            p.genuine_pairs,
            p.impostor_pairs
        );
    }
    let _ = writeln!(m, "\n## Edge\n");
    let _ = writeln!(
        m,
        "Each door person was enrolled from {} unmasked photos; every probe is a different photo, \
         once unmasked and once with an evaluation mask. Operating point: FAR {:.0e} per comparison, \
         calibrated on the verification pairs; {} impostor pairs certify a FAR down to about 3/n, \
         below that the threshold sits above every impostor score seen (stricter than asked). A \
         stranger is compared with every enrolled person, so a 1:N search multiplies the per-comparison \
         FAR by about N: the door runs at the strict point. The mask column \
         counts probes whose `mask_prob` (the model's mask head, which picks the threshold) is on \
         the right side of 0.5.\n",
        r.config.enroll_images,
        r.thresholds.selected_far,
        r.config.val_pairs / 2
    );
    let _ = writeln!(m, "| probes | n | identified | accepted as someone else | not accepted | errors | mask head right |");
    let _ = writeln!(m, "|---|---|---|---|---|---|---|");
    for (name, s) in [
        ("unmasked", &r.unmasked),
        ("masked", &r.masked),
        ("strangers (both)", &r.strangers),
    ] {
        let _ = writeln!(
            m,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.probes, s.correct, s.false_accepts, s.rejected, s.errors, s.mask_detected_right
        );
    }
    let _ = writeln!(
        m,
        "\nThe same identify scores at each calibrated operating point (strangers: {} probes, \
         each against all {} enrolled people):\n",
        r.strangers.probes, r.enrolled
    );
    let _ = writeln!(m, "| target FAR | threshold unmasked / masked | unmasked identified | masked identified | accepted as someone else | strangers accepted |");
    let _ = writeln!(m, "|---|---|---|---|---|---|");
    for p in &r.operating_points {
        let mark = if p.target_far == r.thresholds.selected_far {
            " (door)"
        } else {
            ""
        };
        let _ = writeln!(
            m,
            "| {:.0e}{mark} | {:.3} / {:.3} | {}/{} | {}/{} | {} | {}/{} |",
            p.target_far,
            p.threshold_unmasked,
            p.threshold_masked,
            p.unmasked_identified,
            r.unmasked.probes,
            p.masked_identified,
            r.masked.probes,
            p.wrong_person,
            p.strangers_accepted,
            r.strangers.probes
        );
    }
    let d = &r.door;
    let _ = writeln!(
        m,
        "\nDoor dry run (simulated relay): {} enrolled and {} stranger visitors; {} let in as \
         themselves, {} wrong-person unlocks, {} strangers let in, {} denials, {} relay pulses. \
         Audit log: {}.\n",
        d.visitors_enrolled,
        d.visitors_strangers,
        d.unlocked_right_person,
        d.unlocked_wrong_person,
        d.strangers_let_in,
        d.denials,
        d.relay_pulses,
        d.audit
    );
    let _ = writeln!(m, "## Time per step\n\n| step | s |\n|---|---|");
    for (name, s) in &r.steps {
        let _ = writeln!(m, "| {name} | {s:.1} |");
    }
    m
}
