"""A Qwen2 checkpoint made from a Llama one, for tests that need a Qwen2 model
offline: the Llama checkpoint's tensors and tokenizer files, plus q/k/v
projection biases (seeded normal, std 0.2: the one tensor family a Qwen2 layer
has beyond Llama's), model_type qwen2 and a RoPE base of 1e6 as Qwen2 ships.
transformers loads it as Qwen2ForCausalLM.

    model_dir = qwen2_checkpoint.make_qwen2("models/tiny-llama", "/tmp/qwen2")

tie_embeddings=True drops lm_head.weight and sets tie_word_embeddings, as the
small Qwen2 models (0.5B, 1.5B) ship: the head is then the input embeddings.
"""
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def make_qwen2(llama_dir, out_dir, tie_embeddings=False):
    """A Qwen2 checkpoint: the Llama one's tensors and tokenizer, plus q/k/v biases."""
    out = Path(out_dir)
    out.mkdir()
    src = Path(llama_dir)
    for f in src.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, out / f.name)
    cfg = json.loads((src / "config.json").read_text())
    tensors = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(7)
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    for i in range(cfg["num_hidden_layers"]):
        for proj, rows in (("q", heads * hd), ("k", kv * hd), ("v", kv * hd)):
            bias = torch.randn(rows, generator=gen) * 0.2
            tensors[f"model.layers.{i}.self_attn.{proj}_proj.bias"] = bias.to(torch.float16)
    if tie_embeddings:
        del tensors["lm_head.weight"]
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    for key in ("attention_bias", "mlp_bias", "head_dim", "pretraining_tp"):
        cfg.pop(key, None)
    cfg.update({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "use_sliding_window": False,
                "sliding_window": None, "max_window_layers": cfg["num_hidden_layers"],
                "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
                "tie_word_embeddings": tie_embeddings})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return str(out)
