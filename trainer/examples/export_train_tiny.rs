//! Trains the `tiny` backbone briefly on synthetic identities (ArcFace head, Adam) and
//! saves it as a checkpoint, so export/quantisation accuracy can be measured on a model that
//! has learnt something. Not the training loop (issue 5): a measurement aid for issue 6.
//!
//! `cargo run -p trainer --example export_train_tiny -- OUT.safetensors [STEPS]`

use anyhow::{Context, Result};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use trainer::data::synth::{render_face, Difficulty};
use trainer::loss::{ArcFace, ArcFaceCfg, MarginHead};
use trainer::model::{build_backbone, BackboneCfg};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .context("usage: export_train_tiny OUT.safetensors [STEPS]")?;
    let steps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(300);
    tch::set_num_threads(2);
    tch::manual_seed(0);
    let (ids, per) = (64i64, 8u64);
    let spec = shared::PreprocessSpec::arcface_112();
    let d = Difficulty::easy();
    let mut xs = Vec::new();
    let mut labels = Vec::new();
    for id in 0..ids {
        for im in 0..per {
            // Seed 777: identities disjoint from `trainer synth --seed 0` eval pairs.
            let (img, _) = render_face(777, id as u64, im, &d);
            xs.extend(spec.input_from_aligned(&img, im % 2 == 1)?);
            labels.push(id);
        }
    }
    let x = Tensor::from_slice(&xs).reshape([-1, 3, 112, 112]);
    let y = Tensor::from_slice(&labels);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = BackboneCfg {
        embedding_dim: 128,
        ..Default::default()
    };
    let net = build_backbone("tiny", &vs.root(), &cfg)?;
    let head_vs = nn::VarStore::new(Device::Cpu);
    let mut head = ArcFace::new(
        &head_vs.root(),
        &ArcFaceCfg {
            s: 32.0,
            m: 0.3,
            ..Default::default()
        },
        ids,
        cfg.embedding_dim,
    )?;
    let mut opt = nn::Adam::default().build(&vs, 2e-3)?;
    let mut hopt = nn::Adam::default().build(&head_vs, 2e-3)?;
    let n = labels.len() as i64;
    for step in 0..steps {
        let idx = Tensor::randint(n, [64], (Kind::Int64, Device::Cpu));
        let out = net.forward_t(&x.index_select(0, &idx), true);
        let loss = head.forward(&out.embedding, &y.index_select(0, &idx))?.loss;
        opt.zero_grad();
        hopt.zero_grad();
        loss.backward();
        opt.step();
        hopt.step();
        if step % 50 == 0 || step + 1 == steps {
            eprintln!("step {step}: loss {:.3}", loss.double_value(&[]));
        }
    }
    trainer::checkpoint::save_var_store(&vs, std::path::Path::new(out))?;
    eprintln!("wrote {out}");
    Ok(())
}
