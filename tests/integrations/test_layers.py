"""Every weight accounted for: tied weights share one mask and stay tied in the export;
ConvTranspose and (opt-in) Embedding layers are prunable; what stays dense is said."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from aswl import sparsify as aswl_sparsify
from aswl.methods import ConfigError, create_method


class TiedLM(nn.Module):
    """Input embedding and output layer share one weight (as in most language models)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 16)
        self.hidden = nn.Linear(16, 16)
        self.out = nn.Linear(16, 40, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.emb(ids))))


def test_tied_embedding_and_output_share_one_mask_and_export_tied() -> None:
    torch.manual_seed(0)
    model = TiedLM()
    method = create_method("gmp", model, total_steps=1, target_sparsity=0.5,
                           schedule="constant")
    assert method.tied == {"emb": ["out"]} or method.tied == {"out": ["emb"]}
    assert torch.equal(model.emb.weight, model.out.weight)  # both read the masked weight
    assert float((model.emb.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    method.step()
    plain = method.export()
    assert plain.emb.weight is plain.out.weight
    assert float((plain.emb.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_an_excluded_tied_module_keeps_the_shared_weight_dense() -> None:
    method = create_method("gmp", TiedLM(), total_steps=1, target_sparsity=0.5,
                           exclude=["emb"])
    assert list(method.layers) == ["hidden"]


def test_bert_masked_lm_decoder_and_word_embeddings_stay_tied() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=16)
    model = transformers.BertForMaskedLM(config)
    method = create_method("gmp", model, total_steps=1, target_sparsity=0.7)
    decoder, words = "cls.predictions.decoder", "bert.embeddings.word_embeddings"
    assert words in method.tied.get(decoder, []) or decoder in method.tied.get(words, [])
    method.step()
    plain = method.export()
    a, b = plain.get_submodule(decoder).weight, plain.get_submodule(words).weight
    assert a is b and float((a == 0).float().mean()) > 0.5


def test_conv_transpose_and_opt_in_embeddings_are_prunable() -> None:
    model = nn.Sequential(nn.Embedding(30, 8), nn.ConvTranspose1d(8, 8, 3),
                          nn.Linear(8, 4))
    names = list(create_method("gmp", model, total_steps=1, target_sparsity=0.5).layers)
    assert names == ["1", "2"]
    model = nn.Sequential(nn.Embedding(30, 8), nn.ConvTranspose2d(8, 8, 3), nn.Linear(8, 4))
    method = create_method("gmp", model, total_steps=1, target_sparsity=0.5,
                           prune_embeddings=True)
    assert list(method.layers) == ["0", "1", "2"]
    method.step()
    plain = method.export()
    assert float((plain[1].weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_what_stays_dense_is_said_once_at_attach(caplog) -> None:
    model = nn.ModuleDict({"emb": nn.Embedding(30, 8), "lstm": nn.LSTM(8, 8),
                           "fc": nn.Linear(8, 4)})
    with caplog.at_level(logging.INFO, logger="aswl"):
        create_method("gmp", model, total_steps=1, target_sparsity=0.5)
    said = [r for r in caplog.records if "stay dense" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    message = said[0].getMessage()
    assert "lstm.weight_ih_l0 (recurrent, not prunable)" in message
    assert "emb.weight (embedding" in message
    total = sum(p.numel() for p in model.parameters())
    assert f"{1 - 32 / total:.1%}" in message  # only fc's 4 x 8 weights are pruned
    with pytest.raises(ConfigError, match="recurrent"):
        create_method("gmp", model, total_steps=1, include=["lstm", "fc"])


@pytest.mark.parametrize("method_name", ["gmp", "aswl"])
def test_transformer_encoder_layer_has_its_qkv_pruned(method_name) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32,
                                       batch_first=True, dropout=0.0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.01)
    method = aswl_sparsify(layer, optimizer, total_steps=4, target_sparsity=0.8,
                           method=method_name)
    assert list(method.layers) == ["self_attn.in_proj_weight", "self_attn.out_proj",
                                   "linear1", "linear2"]
    x = torch.randn(3, 5, 16)
    for _ in range(4):
        layer(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    method.finalize()
    assert method.global_sparsity() == pytest.approx(0.8, abs=0.01)
    qkv = layer.self_attn.in_proj_weight  # the masked tensor the forward pass reads
    assert float((qkv == 0).float().mean()) > 0.5
    plain = method.export()
    assert "in_proj_weight" in dict(plain.self_attn.named_parameters())
    assert not hasattr(plain.self_attn, "parametrizations")
    assert torch.equal(plain.self_attn.in_proj_weight, qkv.detach())
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), layer(x))


def test_scale_output_refuses_a_tensor_inside_attention() -> None:
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    with pytest.raises(ConfigError, match="scale_output cannot scale self_attn.in_proj_weight"):
        create_method("aswl", layer, total_steps=4, scale_output=True, target_sparsity=0.5)
    assert not hasattr(layer.self_attn, "parametrizations")  # nothing left attached
