"""One small adapter per model family: where the decoder blocks live and which modules run before block 0.

The block's forward arguments are captured from the model itself at run time (see pruning.driver), so an
adapter only needs module paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Family:
    name: str
    blocks_path: str
    pre_block_paths: tuple[str, ...]
    mlp_out_path: str  # within a block: the Linear whose input is the MLP's intermediate activation (NSA's neurons)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return self._resolve(model, self.blocks_path)

    def mlp_out(self, block: nn.Module) -> nn.Linear:
        return self._resolve(block, self.mlp_out_path)

    def pre_block_modules(self, model: nn.Module) -> list[nn.Module]:
        """Embeddings and everything else the model runs before block 0 (absent optional ones skipped)."""
        return [module for path in self.pre_block_paths if (module := self._resolve(model, path)) is not None]

    def _resolve(self, model: nn.Module, path: str) -> nn.Module | None:
        module = model
        for part in path.split("."):
            if not hasattr(module, part):
                model_type = getattr(getattr(model, "config", None), "model_type", None)
                raise ValueError(f"a {type(model).__name__} has no {path!r}: is model family {self.name!r} right "
                                 f"for this model (config.model_type={model_type!r})?")
            module = getattr(module, part)
        return module


_ROTARY_DECODER = ("model.embed_tokens", "model.rotary_emb")

FAMILIES = {
    family.name: family
    for family in (
        Family("llama", "model.layers", _ROTARY_DECODER, "mlp.down_proj"),
        Family("mistral", "model.layers", _ROTARY_DECODER, "mlp.down_proj"),
        Family("qwen2", "model.layers", _ROTARY_DECODER, "mlp.down_proj"),
        Family("opt", "model.decoder.layers",
               ("model.decoder.embed_tokens", "model.decoder.embed_positions", "model.decoder.project_in"), "fc2"),
        Family("gpt_neox", "gpt_neox.layers", ("gpt_neox.embed_in", "gpt_neox.emb_dropout", "gpt_neox.rotary_emb"),
               "mlp.dense_4h_to_h"),
        # Gemma 3 text: the embedding scale lives in embed_tokens; one rotary module serves both attention types
        Family("gemma3_text", "model.layers", _ROTARY_DECODER, "mlp.down_proj"),
    )
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; supported families: {', '.join(FAMILIES)}")
    return FAMILIES[name]
