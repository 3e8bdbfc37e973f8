"""Generators of item code sequences built on Hugging Face ``transformers``.

A :class:`CodeGenerator` reads a prompt of item code tokens (the history) and writes the code
tokens of the next item (CEMG, Sec. 3.4). Two backbones:

* ``"t5"``: a T5 encoder-decoder (``T5ForConditionalGeneration``), built from scratch at the
  given size or loaded from a checkpoint folder on local disk; the prompt feeds the encoder,
  the decoder writes the codes;
* ``"decoder"``: a plain decoder-only Transformer (GPT-2 blocks) trained from scratch; the
  prompt is left-padded, followed by a separator token, then the codes.

Each code gets one token (``<a_12>``: code 12 of level a); nothing is downloaded. Decoding is
trie-constrained beam search, either the project's ``constrained_beam_search`` over
:meth:`CodeGenerator.search_step` (key/value cache, first step once per input) or
``transformers``' ``generate`` with :class:`TrieLogitsProcessor`, which masks every token that
does not extend a valid item's code prefix; both return the same items and scores.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from recbole_mm.compat import cache_argument, returned_cache
from recbole_mm.model.layers.semantic_ids import constrained_beam_search, reorder_state

PAD, EOS, BOS = 0, 1, 2  # special tokens of a generator built from scratch
N_SPECIAL = 3
_DEAD_SCORE = -1e8  # beam scores below this come from transformers' -1e9 spare-beam start
BACKBONES = ("t5", "decoder")


def code_token_names(vocab_sizes: Sequence[int]) -> list[str]:
    """Token names, level by level: ``<a_0> ... <a_{K-1}> <b_0> ...``."""
    if len(vocab_sizes) > len(string.ascii_lowercase):
        raise ValueError(f"at most 26 code levels have letters, got {len(vocab_sizes)}")
    return [
        f"<{string.ascii_lowercase[level]}_{code}>"
        for level, size in enumerate(vocab_sizes)
        for code in range(size)
    ]


class CodeTokens:
    """Maps codes ``[*, L]`` (level ``l`` in ``[0, vocab_sizes[l])``) to token ids and back.

    Level ``l``'s tokens are ``offset + sum(vocab_sizes[:l]) + code``; a code of ``-1`` (padding
    item) maps to ``pad``.
    """

    def __init__(self, *, vocab_sizes: Sequence[int], offset: int, pad: int) -> None:
        self.vocab_sizes = list(vocab_sizes)
        self.offset = offset
        self.pad = pad
        starts = torch.tensor([0, *self.vocab_sizes[:-1]]).cumsum(0) + offset
        self.level_offsets = starts  # [L]
        self.n_tokens = sum(self.vocab_sizes)

    def tokens(self, codes: torch.Tensor) -> torch.Tensor:
        offsets = self.level_offsets.to(codes.device)[: codes.shape[-1]]
        return torch.where(codes >= 0, codes + offsets, torch.full_like(codes, self.pad))

    def codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes of tokens written from level 0 on; ``-1`` where a token is not of its level."""
        levels = tokens.shape[-1]
        offsets = self.level_offsets.to(tokens.device)[:levels]
        sizes = torch.tensor(self.vocab_sizes[:levels], device=tokens.device)
        codes = tokens - offsets
        return torch.where((codes >= 0) & (codes < sizes), codes, torch.full_like(codes, -1))


class TrieLogitsProcessor:
    """Beam-search hook: only tokens that extend a valid item's code prefix keep their score.

    A plain callable with ``transformers``' ``LogitsProcessor`` signature: ``generate`` calls
    processors by duck typing, and not subclassing keeps ``transformers`` (about 0.6 s) out of
    ``import recbole_mm``.

    Args:
        trie: a :class:`recbole_mm.model.layers.semantic_ids.SemanticIdTrie` over the items.
        tokens: the :class:`CodeTokens` of the generator.
        start: position in ``input_ids`` of the first generated code token.
        excluded: optional bool ``[B, n_items]``, items never to produce; row ``b`` applies to
            the beams ``b * n_beams ... (b + 1) * n_beams - 1``.
        n_beams: beams per input (to expand ``excluded``).
    """

    def __init__(self, trie, tokens: CodeTokens, *, start: int, excluded=None, n_beams=1):
        self.trie = trie
        self.tokens = tokens
        self.start = start
        self.excluded = None if excluded is None else excluded.repeat_interleave(n_beams, 0)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.start :]  # [B*beam, l]
        level = generated.shape[1]
        mask = torch.full_like(scores, float("-inf"))
        if level >= len(self.tokens.vocab_sizes):
            return scores + mask
        prefix = self.tokens.codes(generated)
        valid = (prefix >= 0).all(1)  # a beam kept alive with -inf scores may hold anything
        allowed = self.trie.allowed(prefix.clamp(min=0), excluded=self.excluded)  # [B*beam, K_l]
        allowed = allowed & valid[:, None]
        lo = int(self.tokens.level_offsets[level])
        mask[:, lo : lo + allowed.shape[1]] = torch.where(allowed, 0.0, float("-inf"))
        return scores + mask


def count_parameters(**kwargs) -> int:
    """Parameters of the :class:`CodeGenerator` built with ``kwargs``, counted on the ``meta``
    device (no memory is allocated and no weight is initialised)."""
    with torch.device("meta"):
        generator = CodeGenerator(**kwargs)
    return sum(p.numel() for p in generator.parameters())


def _left_align(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the padding of right-padded rows to the left, keeping token order."""
    order = torch.argsort(mask.long(), dim=1, stable=True)  # pads (0) first, then tokens
    return tokens.gather(1, order), mask.gather(1, order)


class CodeGenerator(nn.Module):
    """A sequence-to-sequence generator of item codes.

    Args:
        backbone: ``"t5"`` (encoder-decoder) or ``"decoder"`` (decoder-only, from scratch).
        vocab_sizes: codes per level; one token is added per code.
        d_model, d_ff, n_layers, n_heads, dropout: size of a backbone built from scratch
            (``n_layers`` encoder and ``n_layers`` decoder blocks for T5).
        checkpoint: a local folder holding a T5 checkpoint (``config.json`` + weights) to start
            from; its vocabulary is kept and the code tokens are appended. T5 only.
        max_prompt_tokens: longest prompt (decoder-only: sizes the position table).
        d_kv: width of each attention head of a T5 built from scratch; ``None``:
            ``d_model // n_heads`` (TIGER: 6 heads of 64 over ``d_model`` 128).
        extra_tokens: plain tokens appended after the code tokens, for prompts only (TIGER's
            hashed user ids); :meth:`extra_token` gives their ids. Generation never emits them.

    Shapes:
        prompt, prompt_mask: ``[B, P]`` right-padded; target: ``[B, L]`` token ids.
    """

    def __init__(
        self,
        *,
        backbone: str,
        vocab_sizes: Sequence[int],
        d_model: int,
        d_ff: int,
        n_layers: int,
        n_heads: int,
        dropout: float = 0.1,
        checkpoint: str | None = None,
        max_prompt_tokens: int = 512,
        d_kv: int | None = None,
        extra_tokens: int = 0,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone = {backbone!r} must be one of {BACKBONES}")
        if extra_tokens < 0:
            raise ValueError(f"extra_tokens = {extra_tokens} must be >= 0")
        if d_kv is not None and backbone != "t5":
            raise ValueError("d_kv sizes the heads of the 't5' backbone only")
        self.backbone_kind = backbone
        self.n_levels = len(vocab_sizes)
        self.n_extra_tokens = extra_tokens
        if checkpoint:
            if backbone != "t5":
                raise ValueError("a pretrained checkpoint can only start the 't5' backbone")
            self.model = self._load_t5(checkpoint)
            offset = self.model.get_input_embeddings().num_embeddings
            pad, eos = self.model.config.pad_token_id, self.model.config.eos_token_id
            self.model.resize_token_embeddings(offset + sum(vocab_sizes) + extra_tokens)
            self.bos = None
        else:
            offset, pad, eos = N_SPECIAL, PAD, EOS
            vocab = offset + sum(vocab_sizes) + extra_tokens
            self.model = (
                self._new_t5(vocab, d_model, d_ff, n_layers, n_heads, dropout, d_kv)
                if backbone == "t5"
                else self._new_decoder(
                    vocab, d_model, d_ff, n_layers, n_heads, dropout, max_prompt_tokens
                )
            )
            self.bos = BOS
        self.pad, self.eos = pad, eos
        self.tokens = CodeTokens(vocab_sizes=vocab_sizes, offset=offset, pad=pad)
        self.token_names = code_token_names(vocab_sizes)
        self.extra_offset = offset + sum(vocab_sizes)  # first token after the code tokens

    def extra_token(self, index: torch.Tensor) -> torch.Tensor:
        """Token ids of the extra tokens ``index`` (in ``[0, extra_tokens)``), same shape."""
        if self.n_extra_tokens == 0:
            raise ValueError("this generator was built with extra_tokens = 0")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n_extra_tokens):
            raise ValueError(f"extra token index outside [0, {self.n_extra_tokens})")
        return index + self.extra_offset

    # -- construction --------------------------------------------------------------------------
    @staticmethod
    def _new_t5(vocab, d_model, d_ff, n_layers, n_heads, dropout, d_kv=None):
        from transformers import T5Config, T5ForConditionalGeneration

        if d_kv is None and d_model % n_heads:
            raise ValueError(f"d_model = {d_model} must be divisible by n_heads = {n_heads}")
        config = T5Config(
            vocab_size=vocab,
            d_model=d_model,
            d_kv=d_kv or d_model // n_heads,
            d_ff=d_ff,
            num_layers=n_layers,
            num_decoder_layers=n_layers,
            num_heads=n_heads,
            dropout_rate=dropout,
            pad_token_id=PAD,
            eos_token_id=EOS,
            decoder_start_token_id=PAD,
        )
        return T5ForConditionalGeneration(config)

    @staticmethod
    def _new_decoder(vocab, d_model, d_ff, n_layers, n_heads, dropout, max_prompt_tokens):
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=vocab,
            n_embd=d_model,
            n_inner=d_ff,
            n_layer=n_layers,
            n_head=n_heads,
            n_positions=max_prompt_tokens + 16,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            pad_token_id=PAD,
            eos_token_id=EOS,
            bos_token_id=BOS,
        )
        return GPT2LMHeadModel(config)

    @staticmethod
    def _load_t5(checkpoint: str):
        from transformers import T5ForConditionalGeneration

        path = Path(checkpoint).expanduser()
        if not (path / "config.json").is_file():
            raise ValueError(
                f"t5_checkpoint = '{checkpoint}' is not a local checkpoint folder (no "
                "config.json). Point it at a folder saved with save_pretrained (e.g. a local "
                "copy of t5-small), or set t5_checkpoint: ~ to train a T5 from scratch; "
                "nothing is downloaded."
            )
        return T5ForConditionalGeneration.from_pretrained(str(path), local_files_only=True)

    # -- training and scoring ----------------------------------------------------------------
    def _decoder_inputs(self, prompt, prompt_mask, target=None):
        """Decoder-only input ``[left-padded prompt, BOS, target]`` with its mask and positions."""
        prompt, prompt_mask = _left_align(prompt, prompt_mask)
        bos = prompt.new_full((prompt.shape[0], 1), self.bos)
        parts, masks = [prompt, bos], [prompt_mask, torch.ones_like(bos, dtype=prompt_mask.dtype)]
        if target is not None:
            parts.append(target)
            masks.append(torch.ones_like(target, dtype=prompt_mask.dtype))
        ids, mask = torch.cat(parts, 1), torch.cat(masks, 1)
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        return ids, mask, positions

    def target_logits(self, prompt, prompt_mask, target) -> torch.Tensor:
        """Logits ``[B, L, V]`` of each target token given the prompt and the previous codes."""
        if self.backbone_kind == "t5":
            out = self.model(input_ids=prompt, attention_mask=prompt_mask, labels=target)
            return out.logits
        ids, mask, positions = self._decoder_inputs(prompt, prompt_mask, target)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        length = target.shape[1]
        return logits[:, -length - 1 : -1]  # the position before each target token predicts it

    def loss(self, prompt, prompt_mask, target) -> torch.Tensor:
        """Next-token cross-entropy over the target codes (Eq. 5), averaged over tokens."""
        logits = self.target_logits(prompt, prompt_mask, target)
        return nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())

    def log_likelihood(self, prompt, prompt_mask, target) -> torch.Tensor:
        """``[B]`` sum of the target tokens' log-probabilities (the score of Eq. 6)."""
        logits = self.target_logits(prompt, prompt_mask, target)
        return logits.log_softmax(-1).gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)

    # -- constrained beam search -------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, prompt, prompt_mask, *, trie, beam_size: int, excluded=None, backend: str = "hf"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Trie-constrained beam search (Eq. 6 scores).

        ``backend="hf"`` runs ``transformers``' ``generate`` with :class:`TrieLogitsProcessor`
        (key/value cache included); ``"shared"`` runs
        :func:`recbole_mm.model.layers.semantic_ids.constrained_beam_search` over
        :meth:`search_step`: the T5 encoder runs once per input, the decoder's first step runs
        once per input and its key/value cache is copied to the beams, and every later step
        feeds only the code chosen last (the cache holds the rest).

        Returns ``(items long [B, beam], scores [B, beam])``, best first; a beam that does not
        end on a valid item (fewer valid items than beams) is item ``-1`` with score ``-inf``.
        """
        if backend == "shared":
            return self._generate_shared(prompt, prompt_mask, trie, beam_size, excluded)
        if backend != "hf":
            raise ValueError(f"generation backend = {backend!r} must be 'hf' or 'shared'")
        from transformers import GenerationConfig, LogitsProcessorList

        if self.backbone_kind == "t5":
            ids, mask, start = prompt, prompt_mask, 1
        else:
            ids, mask, _ = self._decoder_inputs(prompt, prompt_mask)
            start = ids.shape[1]
        processor = TrieLogitsProcessor(
            trie, self.tokens, start=start, excluded=excluded, n_beams=beam_size
        )
        config = GenerationConfig(
            num_beams=beam_size,
            num_return_sequences=beam_size,
            max_new_tokens=self.n_levels,
            min_new_tokens=self.n_levels,
            do_sample=False,
            length_penalty=0.0,  # the score is the plain sum of log-probabilities (Eq. 6)
            early_stopping=True,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=self.pad,
            eos_token_id=self.eos,
            decoder_start_token_id=self.pad,
            bos_token_id=self.bos,
        )
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([processor]),
        )
        codes = self.tokens.codes(out.sequences[:, start : start + self.n_levels])
        items = trie.items(codes.clamp(min=0))  # [B*beam]
        scores = out.sequences_scores.float()
        # transformers starts the spare beams at -1e9, not -inf: a beam that had no allowed
        # continuation may still end on a valid item, a copy of a better beam's.
        bad = (codes < 0).any(1) | (items < 0) | (scores < _DEAD_SCORE)
        items = items.masked_fill(bad, -1).view(-1, beam_size)
        scores = scores.masked_fill(bad, float("-inf")).view(-1, beam_size)
        same = items[:, :, None] == items[:, None, :]  # [B, beam, beam]
        repeat = (same.tril(-1) & (items[:, :, None] >= 0)).any(2)  # a better beam has it
        return items.masked_fill(repeat, -1), scores.masked_fill(repeat, float("-inf"))

    def _generate_shared(self, prompt, prompt_mask, trie, beam_size, excluded):
        return constrained_beam_search(
            self.search_step,
            trie,
            batch_size=prompt.shape[0],
            beam_size=beam_size,
            excluded=excluded,
            state=self.search_state(prompt, prompt_mask),
            reorder=self.search_reorder,
            device=prompt.device,
            first_step_per_user=True,
        )

    # The state of the shared search: (context, mask, cache), batch-first. T5: the encoder
    # output [B', P, d] and its mask [B', P]. Decoder-only: before the first step the prompt and
    # its mask, after it the attention mask so far [B', P + 1 + l] and the next position
    # [B', 1]. ``cache``: the backbone's key/value cache, None before the first step (T5 keeps
    # its cross-attention keys and values there, computed once per user).
    def search_state(self, prompt, prompt_mask) -> tuple:
        """The state :meth:`search_step` starts from (T5: the encoder runs once, here).

        Shapes:
            prompt, prompt_mask: ``[B, P]``; returns ``(context, mask, None)``.
        """
        if self.backbone_kind == "t5":
            encoder = self.model.get_encoder()
            hidden = encoder(input_ids=prompt, attention_mask=prompt_mask).last_hidden_state
            return hidden, prompt_mask, None
        return prompt, prompt_mask, None

    def search_step(self, codes, state) -> tuple[torch.Tensor, tuple]:
        """One step of ``constrained_beam_search``: log-probabilities of the next level's codes.

        The first step (``codes`` ``[B', 0]``) runs the decoder on its start token (T5) or on
        the prompt and separator (decoder-only) and keeps the key/value cache; every later
        step feeds only the code chosen last. The log-softmax runs over the whole vocabulary,
        as in the ``"hf"`` backend.

        Shapes:
            codes: ``[B', l]`` long; returns ``([B', vocab_sizes[l]], state)``.
        """
        first, mask, cache = state
        level = codes.shape[1]
        if (cache is None) != (level == 0):
            raise ValueError(
                "search_step: the first step starts from search_state's state, every later "
                "step from the state the previous step returned"
            )
        if cache is None:
            last = codes.new_full((codes.shape[0], 1), self.pad)  # T5's decoder start
        else:
            last = self.tokens.tokens(codes)[:, -1:]  # [B', 1], the level's own token
        if self.backbone_kind == "t5":
            out = self.model(
                encoder_outputs=(first,),
                attention_mask=mask,
                decoder_input_ids=last,
                use_cache=True,
                **cache_argument(self.model, cache),
            )
            state = (first, mask, returned_cache(out))
        else:
            if cache is None:  # the whole prompt and the separator
                ids, attention, positions = self._decoder_inputs(first, mask)
            else:
                ids, positions = last, mask
                attention = torch.cat([first, torch.ones_like(first[:, :1])], 1)
            out = self.model(
                input_ids=ids,
                attention_mask=attention,
                position_ids=positions,
                use_cache=True,
                **cache_argument(self.model, cache),
            )
            state = (attention, positions[:, -1:] + 1, returned_cache(out))
        logits = out.logits[:, -1]  # [B', vocabulary]
        lo = int(self.tokens.level_offsets[level])
        log_probs = logits.float().log_softmax(-1)  # over the whole vocabulary, as "hf"
        return log_probs[:, lo : lo + self.tokens.vocab_sizes[level]], state

    @staticmethod
    def search_reorder(state: tuple, index: torch.Tensor) -> tuple:
        """Follow the beams ``index`` (long ``[B * beam]``) chosen by the search.

        The first call expands every part from ``B`` users to their beams. After it, a beam
        only ever continues a beam of its own user, and every beam of a user has the same
        length, so the parts that are equal across a user's beams (T5's encoder output, mask
        and cross-attention cache; the decoder-only model's attention mask and position) stay
        where they are and only the self-attention cache follows ``index``.
        """
        first, mask, cache = state
        if first.shape[0] != index.shape[0]:  # users -> their beams
            return (
                first.index_select(0, index),
                mask.index_select(0, index),
                reorder_cache(cache, index),
            )
        return first, mask, reorder_cache(cache, index, self_attention_only=True)


def reorder_cache(cache, index: torch.Tensor, *, self_attention_only: bool = False):
    """Select rows ``index`` of a ``transformers`` key/value cache (``None`` stays ``None``).

    ``self_attention_only``: leave an encoder-decoder cache's cross-attention part as it is
    (its rows are equal across the beams of one input). Cache objects are reordered in place
    and returned; the tuples of older ``transformers`` releases are rebuilt, all parts reordered.
    """
    if cache is None:
        return None
    if hasattr(cache, "self_attention_cache"):  # EncoderDecoderCache
        cache.self_attention_cache.reorder_cache(index)
        if not self_attention_only:
            cache.cross_attention_cache.reorder_cache(index)
        return cache
    if hasattr(cache, "reorder_cache"):  # DynamicCache
        cache.reorder_cache(index)
        return cache
    return reorder_state(cache, index)
