"""The plain DistilBERT recipe, readable top to bottom: one teacher, one student, one vocabulary.

This is the recipe of Sanh et al. (2019) as HF's ``research_projects/distillation/distiller.py`` runs it,
without any of kdlib's machinery (no word alignment, no selected-row heads, no ensembles, no DDP,
no checkpoints): read it first, then `kdlib.engine.distill`, which computes the same thing faster.

    L = alpha_ce * T^2 * KL(softmax(t / T) || softmax(s / T)) + alpha_mlm * MLM + alpha_cos * (1 - cos)

Definitions, and how they relate to kdlib's optimised loop (`kdlib.engine.objective`):

* KL: batchmean over the rows it is taken on, times T^2. The recipe takes it on ALL non-pad positions
  (``kl_on="all"``, the default here); kdlib's default is the masked positions only (``kl_on="masked"``,
  a config setting). `losses` takes either, so both definitions can be compared one for one
  (tests/test_reference.py: same loss and same gradients as kdlib's objective on the same batch).
* MLM: cross-entropy averaged over the labelled (masked) positions.
* cosine: 1 - cos(student, teacher last hidden state), averaged over all non-pad positions.
* masking (`mask_tokens`): BERT's, per token: each real token is chosen with probability `prob`
  (Bernoulli, so the count varies), then 80% [MASK] / 10% random / 10% kept. kdlib masks whole
  words instead, exactly ceil(prob * #words) of them (`kdlib.engine.batching.make_batch`); `losses`
  takes any masked batch, so the comparison feeds both the same one.

`distill` is the loop that `kdlib.bench.speed` times against kdlib's: random batches padded to their
longest text, fp32, the full vocabulary head at every position.
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from kdlib.engine.students import make_student


# -------------------------------------------------------------------------------------------- batches
def padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of token id lists, padded to the longest one."""
    longest = max(map(len, rows))
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), longest), dtype=torch.long)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.tensor(row)
        attn[j, : len(row)] = 1
    return ids, attn


def mask_tokens(
    ids: torch.Tensor,
    attention: torch.Tensor,
    special: torch.Tensor,
    vocab: int,
    gen: torch.Generator,
    prob: float = 0.15,
    mask_id: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: `prob` of the real tokens; 80% [MASK], 10% random, 10% kept; labels -100 elsewhere.

    Each token is chosen independently (Bernoulli), so the count varies; kdlib.engine.mlm picks an exact
    count instead. Kept as the benchmark's reference draws, so its measured losses stay what they were.
    """
    cand = attention.bool() & ~special
    chosen = (torch.rand(ids.shape, generator=gen) < prob) & cand
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=gen)
    ids = ids.clone()
    ids[chosen & (r < 0.8)] = mask_id
    rand = chosen & (r >= 0.8) & (r < 0.9)
    ids[rand] = torch.randint(0, vocab, (int(rand.sum()),), generator=gen)
    return ids, labels


# --------------------------------------------------------------------------------------------- losses
def ce_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), batchmean over the (B, L) positions `rows` (DistilBERT's L_ce)."""
    keep = rows.bool()
    s = s_logits[keep] / temperature
    t = t_logits[keep] / temperature
    kl = F.kl_div(torch.log_softmax(s, -1), torch.softmax(t, -1), reduction="batchmean")
    return kl * temperature**2


def losses(
    s_out,
    t_out,
    batch: dict,
    *,
    temperature: float = 2.0,
    alphas: tuple[float, float, float] = (5.0, 2.0, 1.0),
    kl_on: str = "all",
) -> dict[str, torch.Tensor]:
    """alpha_ce * L_ce + alpha_mlm * L_mlm + alpha_cos * L_cos from full HF outputs (with hidden states).

    kl_on="all": L_ce on every non-pad position (the recipe); "masked": on the labelled ones (kdlib's default).
    """
    mask = batch["attention_mask"]
    kl_rows = mask if kl_on == "all" else batch["labels"] != -100
    ce = ce_loss(s_out.logits, t_out.logits, kl_rows, temperature)
    mlm = F.cross_entropy(s_out.logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    keep = mask.bool()
    s_h, t_h = s_out.hidden_states[-1][keep], t_out.hidden_states[-1][keep]
    cos = F.cosine_embedding_loss(s_h, t_h, torch.ones(len(s_h), device=s_h.device))
    total = alphas[0] * ce + alphas[1] * mlm + alphas[2] * cos
    return {"loss": total, "ce": ce, "mlm": mlm, "cos": cos}


def step_loss(student, teacher, batch: dict[str, torch.Tensor], **kw) -> dict[str, torch.Tensor]:
    """Student forward (with gradients), teacher forward (without), and `losses` on one masked batch."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    s_out = student(**inputs, output_hidden_states=True)
    with torch.no_grad():
        t_out = teacher(**inputs, output_hidden_states=True)
    return losses(s_out, t_out, batch, **kw)


# ----------------------------------------------------------------------------------------------- loop
def load_models(teacher_dir: str | os.PathLike, student_layers: int, seed: int, device: torch.device):
    """(tokenizer, frozen teacher, student initialised from the teacher's layers)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    teacher = AutoModelForMaskedLM.from_pretrained(str(teacher_dir)).to(device).eval()
    teacher.requires_grad_(False)
    student = make_student(teacher, init="teacher", num_layers=student_layers, seed=seed).to(device).train()
    return tok, teacher, student


def _sync(device: torch.device) -> None:
    """Wait for the device, so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def distill(
    teacher_dir: str | os.PathLike,
    texts: list[str],
    *,
    student_layers: int,
    batch_size: int,
    max_len: int,
    steps: int,
    device: torch.device,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    lr: float = 5e-4,
    max_grad_norm: float = 5.0,
) -> dict:
    """Distil `teacher_dir` into a `student_layers`-layer student on `texts`; returns timings, tokens, losses.

    Random batches padded to their longest text, BERT token masking, fp32, KL on every non-pad position
    over the full vocabulary; AdamW with linear warmup (5% of the steps) and decay, gradient clipping.
    """
    from transformers import get_linear_schedule_with_warmup

    for name, value in (("steps", steps), ("batch_size", batch_size), ("max_len", max_len)):
        if value is not None and (not isinstance(value, (int, float)) or value <= 0):
            raise ValueError(f"{name}={value!r}: expected a positive number")
    t_start = time.perf_counter()
    torch.manual_seed(seed)
    tok, teacher, student = load_models(teacher_dir, student_layers, seed, device)
    encoded = tok(texts, truncation=True, max_length=max_len)["input_ids"]
    special_ids = torch.tensor(sorted(set(tok.all_special_ids)))
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, max(1, steps // 20), steps)
    gen = torch.Generator().manual_seed(seed)
    real_tokens = padded_tokens = 0
    step_losses = []
    _sync(device)
    t_train = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(encoded), (batch_size,), generator=gen).tolist()
        ids, attn = padded([encoded[i] for i in idx], tok.pad_token_id)
        special = torch.isin(ids, special_ids)
        masked, labels = mask_tokens(ids, attn, special, student.config.vocab_size, gen, mask_id=tok.mask_token_id)
        batch = {"input_ids": masked.to(device), "attention_mask": attn.to(device), "labels": labels.to(device)}
        real_tokens += int(attn.sum())
        padded_tokens += attn.numel()
        total = step_loss(student, teacher, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
        opt.step()
        sched.step()
        step_losses.append(float(total.detach()))
    _sync(device)
    train_s = time.perf_counter() - t_train
    if out_dir is not None:
        student.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
    total_s = time.perf_counter() - t_start
    return {
        "steps": steps,
        "batch_size": batch_size,
        "total_s": total_s,
        "train_s": train_s,
        "real_tokens": real_tokens,
        "padded_tokens": padded_tokens,
        "tokens_per_s": real_tokens / total_s,
        "train_tokens_per_s": real_tokens / train_s,
        "first_loss": step_losses[0],
        "last_loss": step_losses[-1],
        "student_params": student.num_parameters(),
        "teacher_params": [teacher.num_parameters()],
    }
