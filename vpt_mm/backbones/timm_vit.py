"""PromptedTimmViT: visual prompts on any timm ViT-family model.

timm's ``VisionTransformer`` (DINOv2 with or without registers, CLIP,
SigLIP, DeiT-III, MAE, IN-21k ViT) and ``Eva`` (EVA-02 with RoPE and SwiGLU,
DINOv3) classes, built by ``timm.create_model`` and run through the same
prompt logic as :class:`~vpt_mm.backbones.PromptedViT`
(:class:`~vpt_mm.backbones.sequence.PromptedSequenceMixin`).
"""
from __future__ import annotations

import sys
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from ..checkpoints import guard_loads, load_configured_pretrained
from ..prompts import VisualPrompt
from ..prompts.fused import KV
from ..prompts.plan import PromptPlan
from ..registry import register_model
from ..validation import require_bool, require_str
from .sequence import PromptedSequenceMixin

#: ``timm.create_model`` arguments this class sets itself.
RESERVED_TIMM_KWARGS = ('pretrained', 'num_classes', 'img_size',
                        'dynamic_img_size', 'pretrained_cfg_overlay')


def _timm_classes() -> Tuple[type, type]:
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer, Eva


def _fusable_block_types() -> Tuple[type, type]:
    from timm.models.eva import EvaBlock
    from timm.models.vision_transformer import Block
    return Block, EvaBlock


def pad_rope(rope: Optional[torch.Tensor],
             num_prompts: int) -> Optional[torch.Tensor]:
    """A rotary embedding ``cat([sin, cos])`` (N, 2r) with ``num_prompts``
    identity rotations (sin 0, cos 1) in front: the prompts, which have no
    position, pass through RoPE unchanged, as the prefix tokens do."""
    if rope is None or num_prompts == 0:
        return rope
    sin, cos = rope.tensor_split(2, -1)
    shape = (*rope.shape[:-2], num_prompts, sin.shape[-1])
    return torch.cat([
        torch.cat([sin.new_zeros(shape), sin], dim=-2),
        torch.cat([cos.new_ones(shape), cos], dim=-2)
    ], dim=-1)


def _heads(attn: nn.Module, h: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """q, k, v (B, heads, N, head_dims) of a timm ``Attention`` /
    ``EvaAttention`` on normed tokens ``h``, its q/k norms applied (as the
    module's own forward computes them)."""
    B, N, _ = h.shape
    heads = attn.num_heads
    if getattr(attn, 'qkv', None) is not None:
        bias = attn.qkv.bias
        if getattr(attn, 'q_bias', None) is not None:  # EVA's split bias
            qkv_bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
            bias = qkv_bias if bias is None else bias + qkv_bias
        qkv = F.linear(h, attn.qkv.weight, bias)
        q, k, v = qkv.reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1,
                                                          4).unbind(0)
    else:
        q, k, v = (proj(h).reshape(B, N, heads, -1).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    return attn.q_norm(q), attn.k_norm(k), v


def _rotate(attn: nn.Module, t: torch.Tensor, rope: torch.Tensor,
            n: int) -> torch.Tensor:
    """RoPE on every token of ``t`` after the ``n`` prefix tokens (EVA)."""
    from timm.layers import apply_rot_embed_cat
    half = getattr(attn, 'rotate_half', False)
    return torch.cat([t[:, :, :n], apply_rot_embed_cat(t[:, :, n:], rope,
                                                        half=half)], dim=2)


def _residuals(block: nn.Module, x: torch.Tensor,
               attn_out: torch.Tensor) -> torch.Tensor:
    """The rest of a timm ``Block`` / ``EvaBlock`` after its attention:
    layer scale, drop path, residual, then the MLP branch."""
    if hasattr(block, 'ls1'):  # Block
        x = x + block.drop_path1(block.ls1(attn_out))
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    if block.gamma_1 is not None:  # EvaBlock
        attn_out = block.gamma_1 * attn_out
    x = x + block.drop_path1(attn_out)
    mlp = block.mlp(block.norm2(x))
    if block.gamma_2 is not None:
        mlp = block.gamma_2 * mlp
    return x + block.drop_path2(mlp)


def timm_prompt_kv(block: nn.Module, prompts: torch.Tensor) -> KV:
    """Keys and values of a layer's prompts (B', p, d) in a timm block:
    normed, projected, key-normed; no rotation (prompts have no position).
    """
    _, k, v = _heads(block.attn, block.norm1(prompts))
    return k, v


def fused_timm_block(block: nn.Module,
                     x: torch.Tensor,
                     kv_prompts: KV,
                     key_mask: Optional[torch.Tensor] = None,
                     rope: Optional[torch.Tensor] = None,
                     num_prefix_tokens: int = 0) -> torch.Tensor:
    """Run a timm ``Block`` / ``EvaBlock`` on the tokens without prompts,
    attending over the prompts' keys/values too (the fused form).

    Args:
        block (nn.Module): The block.
        x (torch.Tensor): (B, N, d) prefix and patch tokens.
        kv_prompts (tuple): From :func:`timm_prompt_kv` (batch 1 or B).
        key_mask (torch.Tensor, optional): (B, p + N) bool, the keys each
            sample attends to (padded prompt sets).
        rope (torch.Tensor, optional): EVA's rotary embedding of the
            patches.
        num_prefix_tokens (int): Tokens RoPE skips.

    Returns:
        torch.Tensor: (B, N, d), the token form's outputs at these tokens.
    """
    attn = block.attn
    B, N, _ = x.shape
    h = block.norm1(x)
    q, k, v = _heads(attn, h)
    if rope is not None:
        q = _rotate(attn, q, rope, num_prefix_tokens).type_as(v)
        k = _rotate(attn, k, rope, num_prefix_tokens).type_as(v)
    pk, pv = kv_prompts
    k = torch.cat([pk.to(k.dtype).expand(B, -1, -1, -1), k], dim=2)
    v = torch.cat([pv.to(v.dtype).expand(B, -1, -1, -1), v], dim=2)
    drop = attn.attn_drop.p if attn.training else 0.0
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                         dropout_p=drop)
    out = attn.norm(out.transpose(1, 2).reshape(B, N, -1))
    if getattr(attn, 'gate', None) is not None:
        out = out * attn.gate(h).sigmoid()
    out = attn.proj_drop(attn.proj(out))
    return _residuals(block, x, out)


def _layer_indices(out_indices: Union[int, Sequence[int]],
                   num_layers: int) -> Tuple[int, ...]:
    """``out_indices`` as non-negative layer indices (negative: from the
    end, as mmpretrain's)."""
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    indices = []
    for index in out_indices:
        i = index + num_layers if index < 0 else index
        if not 0 <= i < num_layers:
            raise ValueError(f'out_indices {index} is out of range for '
                             f'{num_layers} layers')
        indices.append(i)
    return tuple(indices)


@register_model()
class TimmViT(BaseModule):
    r"""A timm ViT-family model as an OpenMMLab backbone, without prompts.

    ``timm.create_model(model_name, num_classes=0, img_size=img_size,
    dynamic_img_size=True, **timm_kwargs)`` builds the model (its weights
    come from ``init_cfg``, never from a hub); its parameters live under
    ``timm_model.``. The backbone of the baselines (Linear, Full, Partial,
    Bias, ... through ``TunedClassifier``) and the unprompted form of
    :class:`PromptedTimmViT`.

    Args:
        model_name (str): A timm model of the ``VisionTransformer`` or
            ``Eva`` class, e.g. ``'vit_base_patch14_reg4_dinov2'``,
            ``'eva02_base_patch14_224'``, ``'vit_base_patch16_siglip_224'``.
        img_size (int | tuple): The input size position embeddings are made
            for (others are resampled at run time). Defaults to 224.
        out_type (str): ``'cls_token'`` (models with a class token),
            ``'raw'`` (the whole sequence), ``'featmap'`` (NCHW patch tokens)
            or ``'avg_featmap'`` (their mean). Defaults to ``'cls_token'``.
        out_indices (int | Sequence[int]): Layers to output (negative:
            from the end). Defaults to -1.
        final_norm (bool): Apply timm's final norm after the last layer.
            Defaults to True.
        timm_kwargs (dict, optional): More ``timm.create_model``
            arguments, e.g. ``dict(drop_path_rate=0.1)``.
        init_cfg (dict, optional): ``dict(type='Pretrained',
            checkpoint=FILE)`` with ``FILE`` in timm's own layout (the hub's
            ``model.safetensors`` / ``pytorch_model.bin``), loaded strictly
            through timm's own ``checkpoint_filter_fn`` for the model
            (position embeddings resampled as timm does).

    Examples:
        >>> from vpt_mm.backbones import TimmViT
        >>> model = TimmViT('vit_small_patch16_224', img_size=32,
        ...                 timm_kwargs=dict(depth=2, embed_dim=64,
        ...                                  num_heads=2))
        >>> model(torch.rand(2, 3, 32, 32))[0].shape
        torch.Size([2, 64])
    """

    OUT_TYPES = {'raw', 'cls_token', 'featmap', 'avg_featmap'}

    def __init__(self,
                 model_name: str,
                 img_size: Union[int, Sequence[int]] = 224,
                 out_type: str = 'cls_token',
                 out_indices: Union[int, Sequence[int]] = -1,
                 final_norm: bool = True,
                 timm_kwargs: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        import timm
        if timm_kwargs is not None and not isinstance(timm_kwargs, dict):
            raise TypeError('timm_kwargs must be a dict of timm.create_model '
                            f'arguments, got {timm_kwargs!r}')
        timm_kwargs = dict(timm_kwargs or {})
        reserved = sorted(set(timm_kwargs) & set(RESERVED_TIMM_KWARGS))
        if reserved:
            raise ValueError(
                f'timm_kwargs may not set {reserved}: {type(self).__name__} '
                'sets them (weights come from init_cfg, the head from the '
                'config, img_size is its own argument)')
        self.model_name = require_str('model_name', model_name)
        if not timm.is_model(model_name):
            raise ValueError(f'{model_name!r} is not a timm model name '
                             '(timm.list_models() lists them)')
        takes = (f'{type(self).__name__} takes the VisionTransformer and Eva '
                 'classes (DINOv2/v3, CLIP, SigLIP, EVA-02, DeiT-III, MAE, '
                 'ViT)')
        try:
            self.timm_model = timm.create_model(
                model_name, pretrained=False, num_classes=0,
                img_size=img_size, dynamic_img_size=True, **timm_kwargs)
        except TypeError as err:  # not a ViT: no img_size / dynamic size
            raise TypeError(f'timm model {model_name!r} is not a ViT-family '
                            f'model ({err}); {takes}') from err
        model = self.timm_model
        if not isinstance(model, _timm_classes()):
            raise TypeError(f'timm model {model_name!r} is a '
                            f'{type(model).__name__}; {takes}')
        patch_drop = getattr(model, 'patch_drop', None)
        if getattr(patch_drop, 'prob', 0.0):
            raise ValueError('patch dropout (patch_drop_rate) drops patches '
                             'the prompts sit beside; set it to 0')
        if getattr(model, 'rope_mixed', False):
            raise ValueError(f'{model_name!r} uses depth-mixed RoPE, which '
                             f'{type(self).__name__} does not support')
        self.num_layers = len(model.blocks)
        self.num_extra_tokens = model.num_prefix_tokens
        self.embed_dims = model.embed_dim
        if require_str('out_type', out_type) not in self.OUT_TYPES:
            raise ValueError(f'Unsupported out_type {out_type!r}, choose '
                             f'from {sorted(self.OUT_TYPES)}')
        if out_type == 'cls_token' and model.cls_token is None:
            raise ValueError(
                f"out_type 'cls_token': {model_name!r} has no class token; "
                "use 'avg_featmap'")
        self.out_type = out_type
        self.out_indices = _layer_indices(out_indices, self.num_layers)
        self.final_norm = require_bool('final_norm', final_norm)
        guard_loads(self, self.load_pretrained)

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int],
                                               Optional[torch.Tensor]]:
        """Patch embedding, prefix tokens and positions, as timm's
        ``forward_features`` starts: the tokens (B, n + H * W, d), the patch
        grid and EVA's rotary embedding (None for other models)."""
        model = self.timm_model
        x = model.patch_embed(x)  # (B, H, W, d)
        hw = tuple(x.shape[1:3])
        rope = None
        if hasattr(model, 'rope'):  # Eva: patch dropout is inside
            x, rope = model._pos_embed(x)
        else:
            x = model.patch_drop(model._pos_embed(x))
        return model.norm_pre(x), hw, rope

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The ``out_indices`` outputs of images, in the form of
        ``out_type``.

        Args:
            x (torch.Tensor): (B, C, H, W), H and W multiples of the patch
                size; other sizes than ``img_size`` resample the position
                embeddings (and RoPE) as timm does.

        Returns:
            tuple[torch.Tensor]: One output per ``out_indices`` layer.
        """
        x, hw, rope = self._embed(x)
        outs = []
        last = self.num_layers - 1
        for i, block in enumerate(self.timm_model.blocks):
            x = block(x) if rope is None else block(x, rope=rope)
            if i == last and self.final_norm:
                x = self.timm_model.norm(x)
            if i in self.out_indices:
                outs.append(self._readout(x, hw))
        return tuple(outs)

    def _readout(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patches = x[:, self.num_extra_tokens:]
        if self.out_type == 'featmap':
            return patches.reshape(x.shape[0], *hw, -1).permute(0, 3, 1, 2)
        return patches.mean(dim=1)  # 'avg_featmap'

    def checkpoint_layout(self, state: Dict[str, torch.Tensor]
                          ) -> Dict[str, torch.Tensor]:
        """The inverse of :meth:`from_checkpoint_layout` for this model: its
        tensors under timm's own names (what a stand-in checkpoint holds)."""
        prefix = 'timm_model.'
        if any(not k.startswith(prefix) for k in state):
            raise ValueError('checkpoint_layout takes this module\'s own '
                             f'tensors, all under {prefix!r}')
        return {k[len(prefix):]: v for k, v in state.items()}

    def from_checkpoint_layout(self, state: Dict[str, torch.Tensor]
                               ) -> Dict[str, torch.Tensor]:
        """A checkpoint in timm's layout (what timm loads for the model from
        its hub) as this module's keys: through the model's own
        ``checkpoint_filter_fn`` (layout conversions, position embeddings
        and patch projections resampled to this model), under
        ``timm_model.``."""
        model = self.timm_model
        module = sys.modules[type(model).__module__]
        filter_fn = getattr(module, 'checkpoint_filter_fn', None)
        if filter_fn is not None:
            state = filter_fn(dict(state), model)
        return {f'timm_model.{k}': v for k, v in state.items()}

    def unused_pretrained_keys(self, keys: Sequence[str]) -> list:
        """The classifier head of a pretrained checkpoint (the model is
        built without one: the config's head reads its features), and the
        final norm with ``final_norm=False``."""
        heads = self.timm_model.pretrained_cfg.get('classifier') or 'head'
        if isinstance(heads, str):
            heads = (heads, )
        prefixes = tuple(f'timm_model.{h}.' for h in heads)
        if not self.final_norm:
            prefixes += ('timm_model.norm.', )
        return [k for k in keys if k.startswith(prefixes)]

    def load_pretrained(self) -> bool:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=FILE)``, with
        ``FILE`` in timm's layout, strictly
        (:func:`~vpt_mm.checkpoints.load_configured_pretrained`).

        Returns:
            bool: False if ``init_cfg`` names no pretrained checkpoint.
        """
        return load_configured_pretrained(self)

    def init_weights(self) -> None:
        """Load the pretrained checkpoint strictly, or keep timm's random
        initialisation (never mmengine's non-strict loader)."""
        if not self.load_pretrained():
            super().init_weights()


@register_model()
class PromptedTimmViT(PromptedSequenceMixin, TimmViT):
    r"""A timm ViT-family model with learnable visual prompts, frozen.

    :class:`TimmViT` with prompts: the sequence is ``[prefix tokens (class,
    registers), prompts, patches]``. Prompts have no position: absolute
    position embeddings are added before they enter, and RoPE leaves them
    unrotated, as it does the prefix tokens. The prompt module, its
    options, the fused form, the readouts and the frozen-backbone contract
    are :class:`PromptedViT`'s.

    Args:
        model_name (str): As for :class:`TimmViT`.
        prompt_cfg (dict): As for :class:`PromptedViT`; ``'concat-channel'``
            is refused.
        freeze_backbone (bool): As for :class:`PromptedViT`.
        trainable (Sequence[str]): As for :class:`PromptedViT`, with timm's
            parameter names under ``timm_model.``.
        fuse_prompts (bool): As for :class:`PromptedViT`.
        with_cp (bool): As for :class:`PromptedViT`.
        out_type (str): As for :class:`PromptedViT`: ``'cls_token'``
            (models with a class token), ``'raw'``, ``'featmap'``,
            ``'avg_featmap'``, ``'avg_prompt'`` or ``'avg_all'``.
            Defaults to ``'cls_token'``.
        **kwargs: The other arguments of :class:`TimmViT`: ``img_size``,
            ``out_indices``, ``final_norm``, ``timm_kwargs``, ``init_cfg``
            (only the prompts may be missing from its file).

    Examples:
        >>> from vpt_mm.backbones import PromptedTimmViT
        >>> model = PromptedTimmViT(
        ...     'vit_small_patch16_224', img_size=32,
        ...     prompt_cfg=dict(num_tokens=5, deep=True),
        ...     timm_kwargs=dict(depth=2, embed_dim=64, num_heads=2))
        >>> model(torch.rand(2, 3, 32, 32))[0].shape
        torch.Size([2, 64])
    """

    UPSTREAM = TimmViT
    OWN_ARGS = PromptedSequenceMixin.OWN_ARGS + ('fuse_prompts', 'with_cp')
    #: What the unprompted model reads where this one pools prompts.
    UNPROMPTED_POOLS = {'avg_prompt': 'avg_featmap', 'avg_all': 'avg_featmap',
                        'avg_featmap': 'avg_featmap'}
    # timm's layout, not the mixin's default (which comes first).
    checkpoint_layout = TimmViT.checkpoint_layout
    from_checkpoint_layout = TimmViT.from_checkpoint_layout
    unused_pretrained_keys = TimmViT.unused_pretrained_keys

    def __init__(self,
                 model_name: str,
                 prompt_cfg: Optional[dict] = None,
                 freeze_backbone: bool = True,
                 trainable: Sequence[str] = (),
                 fuse_prompts: bool = True,
                 with_cp: bool = False,
                 **kwargs) -> None:
        super().__init__(model_name, **kwargs)
        patch_embed = self.timm_model.patch_embed
        self.prompt = VisualPrompt(
            prompt_cfg or {},
            embed_dims=self.embed_dims,
            num_layers=self.num_layers,
            patch_size=patch_embed.patch_size,
            grid_size=patch_embed.grid_size,
            in_channels=patch_embed.proj.in_channels)
        if self.prompt.location == 'concat-channel':
            raise ValueError("prompt location 'concat-channel' is not "
                             'supported by PromptedTimmViT')
        self._check_pooled_prompts()
        self.with_cp = require_bool('with_cp', with_cp)
        self.fuse(require_bool('fuse_prompts', fuse_prompts))
        self.init_frozen_backbone(freeze_backbone, trainable)

    # The pieces PromptedSequenceMixin runs.
    def _blocks(self) -> nn.ModuleList:
        return self.timm_model.blocks

    def _check_fusable(self, i: int) -> None:
        block = self.timm_model.blocks[i]
        if type(block) not in _fusable_block_types():
            raise TypeError(
                f'{type(block).__name__} (layer {i}) has no fused prompt '
                'form (timm Block and EvaBlock have); use fuse_prompts=False')

    @staticmethod
    def _layer_prompt_kv(layer: nn.Module, prompts: torch.Tensor) -> KV:
        return timm_prompt_kv(layer, prompts)

    def _token_layer(self, i: int, x: torch.Tensor,
                     keep: Optional[torch.Tensor],
                     hw: Sequence[int],
                     rope: Optional[torch.Tensor]) -> torch.Tensor:
        block = self.timm_model.blocks[i]
        mask = None if keep is None else keep[:, None, None, :]
        if rope is None:
            return block(x, attn_mask=mask)
        num_prompts = x.shape[1] - self.num_extra_tokens - hw[0] * hw[1]
        return block(x, rope=pad_rope(rope, num_prompts), attn_mask=mask)

    def _fused_layer(self, i: int, x: torch.Tensor, kv: KV,
                     keep: Optional[torch.Tensor], hw: Sequence[int],
                     rope: Optional[torch.Tensor]) -> torch.Tensor:
        return fused_timm_block(self.timm_model.blocks[i], x, kv, keep, rope,
                                self.num_extra_tokens)

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embed pixel-space prompt patches with the frozen projection."""
        return self.timm_model.patch_embed(pixels).flatten(1, 2)[:, 0]

    def forward(self, x: torch.Tensor,
                plan: Optional[PromptPlan] = None) -> Tuple[torch.Tensor, ...]:
        """The ``out_indices`` outputs of images, in the form of
        ``out_type``.

        Args:
            x (torch.Tensor): As for :meth:`TimmViT.forward`.
            plan (PromptPlan, optional): Each sample's prompts
                (:meth:`prompt_plan`).

        Returns:
            tuple[torch.Tensor]: One output per ``out_indices`` layer.
        """
        plan = self.prompt_plan(plan)
        x, hw, rope = self._embed(x)
        return self._run_layers(x, plan, hw, self.timm_model.norm, hw, rope)
