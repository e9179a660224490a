"""X-MoPA: cross-modal latent prediction over crystal graph, text and XRD (SPEC table; O5, O7, O1).

Modalities and encoders (paper, Sec. 2 and Appendix A):
  crystal  CGCNN (``mmjax.nn.CGCNN``; 92-d CGCNN element table by default) -> [N, 128]
  text     frozen MatSciBERT [CLS] embedding (precomputed, ``batch["text"]`` [N, 768]) ->
           linear projection to 150-d (``TextMLP(depth=1, out_dim=150)``)
  xrd      1-D CNN: conv -> max-pool -> two dense layers (``XrdCNN``) -> [N, 128]
Each encoder output is projected into the joint embedding space by ``P_m`` (Appendix Eq. 1;
a Dense layer to ``latent_dim``): ``z~_m = P_m(f_m(x_m))`` [N, latent_dim].

Objective (Appendix Eq. 2-7 and main-text Eq. 3)::

    L = L_pred + alpha * L_VIC + beta * L_contrast
    L_pred     = sum_m mean_b ||h_m([z~_m1, z~_m2]) - z~_m||^2          (cross_modal_prediction)
                 with ``sample_target``: each sample b scores only one randomly drawn target
                 modality ("for each training instance, select two modalities and predict the
                 third"); the target index is drawn per row from the step rng when training,
                 and all three terms count at evaluation.
    L_VIC      = mean_m vicreg(z~_m)     (variance + covariance terms, Eq. 5, per modality)
    L_contrast = all_pairs_clip(z~, present, tau)   (InfoNCE over the 3 modality pairs, Eq. 6)

The paper gives no numeric alpha, beta, tau (only "lambda << 1" in Eq. 7); the defaults in
``configs/xmopa.py`` are our choices and are labelled so. Rows take part in a term only where
the modalities involved are present (``slot_valid & present``).

Downstream (probe): ``stage="finetune"`` trains heads on the concatenated latents of the three
modalities (``head_source="latent"``; ``"encoder"``: on the encoder outputs before the projections
P_m, which take the pretraining losses' pull on scale); ``configs/xmopa.py`` freezes every encoder/projection/predictor group
(``config.optim.groups``) so only the heads learn, as in the paper.
"""

from __future__ import annotations

import jax
import ml_collections

from mmjax.data.features.elements import element_features
from mmjax.nn import CrossModalPredictors
from mmjax.nn.heads import MLP
from mmjax.objectives import all_pairs_clip, cross_modal_prediction, vicreg
from mmjax.systems import common

MODALITIES = ("crystal", "text", "xrd")


class XMoPA(common.MultimodalSystem):
    """X-MoPA system (see module docstring). Extra parameter groups: ``predictors`` (the three
    h_m MLPs) and ``temperature`` (only with ``learnable_temperature``)."""

    name = "xmopa"

    def __init__(self, encoders, projections, *, predictor_hidden=(256,), predictor_activation="gelu",
                 sample_target=True, stop_gradient_targets=False, reduction="sum", vicreg_weight=0.01,
                 vicreg_gamma=1.0, vicreg_lambda_var=1.0, vicreg_lambda_cov=1.0, vicreg_use_std=False,
                 contrastive_weight=0.1,
                 temperature=0.07, learnable_temperature=False, **kwargs):
        super().__init__(encoders, projections, **kwargs)
        if set(self.modalities) != set(MODALITIES):
            raise ValueError(f"X-MoPA needs exactly the modalities {MODALITIES}, got {self.modalities}")
        self.predictors = CrossModalPredictors(MODALITIES, tuple(predictor_hidden), predictor_activation)
        self.sample_target = bool(sample_target)
        self.stop_gradient_targets = bool(stop_gradient_targets)
        self.reduction = reduction
        self.vicreg_weight, self.contrastive_weight = float(vicreg_weight), float(contrastive_weight)
        self.vicreg_kwargs = dict(gamma=vicreg_gamma, lambda_var=vicreg_lambda_var, lambda_cov=vicreg_lambda_cov,
                                  use_std=bool(vicreg_use_std))
        self.temperature, self.learnable_temperature = float(temperature), bool(learnable_temperature)

    def init_extra(self, rng, latents):
        missing = [m for m in MODALITIES if m not in latents]
        if missing:
            raise ValueError(f"X-MoPA needs all of {MODALITIES} in the batch; missing {missing} "
                             "(ask the data config for them)")
        extra = {"predictors": self.predictors.init(rng, dict(latents))["params"]}
        if self.learnable_temperature:
            extra["temperature"] = common.init_temperature(self.temperature)
        return extra

    def predict_latents(self, params, latents):
        """``{m: h_m([z~ of the other two])}`` [N, latent_dim] each."""
        return self.predictors.apply({"params": params["predictors"]}, dict(latents))

    def pretrain_loss(self, params, latents, masks, rng, train):
        missing = [m for m in MODALITIES if m not in latents]
        if missing:
            raise ValueError(f"X-MoPA needs all of {MODALITIES} in the batch; missing {missing}")
        preds = self.predict_latents(params, latents)
        n = latents["crystal"].shape[0]
        target_index = None
        if self.sample_target and train:
            target_index = jax.random.randint(rng, (n,), 0, len(MODALITIES))
        l_pred = cross_modal_prediction(preds, latents, masks, stop_gradient_targets=self.stop_gradient_targets,
                                        reduction=self.reduction, target_index=target_index)
        l_vic = sum(vicreg(latents[m], mask=masks[m], **self.vicreg_kwargs) for m in MODALITIES) / len(MODALITIES)
        tau = common.temperature_value(params.get("temperature"), self.temperature)
        l_con = all_pairs_clip(latents, masks, tau)
        loss = l_pred + self.vicreg_weight * l_vic + self.contrastive_weight * l_con
        return loss, {"prediction": l_pred, "vicreg": l_vic, "contrastive": l_con, "temperature": tau}


def make_system(config: ml_collections.ConfigDict) -> XMoPA:
    """Factory for ``config.system.name == "xmopa"`` (keys: see ``configs/xmopa.py``)."""
    s = config.system
    small = bool(s.get("small", False))
    dtype = common.compute_dtype(config)
    table = None
    if s.get("element_features", "cgcnn92") == "cgcnn92":
        table = element_features("cgcnn92")
    encoders = {  # each replaceable by name: config.system.encoder_overrides.<modality>.name
        "crystal": common.configured_encoder(s, "crystal", "xmopa_crystal", small, dtype, element_features=table),
        # linear projection of the frozen [CLS] embedding to system.text_dim (150; 16 in :small)
        "text": common.configured_encoder(s, "text", "xmopa_text", False, dtype,
                                          out_dim=int(s.get("text_dim", 16 if small else 150))),
        "xrd": common.configured_encoder(s, "xrd", "xmopa_xrd", small, dtype),
    }
    latent = int(s.latent_dim)
    projections = {m: MLP((), latent, dtype=dtype) for m in MODALITIES}
    return XMoPA(
        encoders, projections,
        predictor_hidden=tuple(s.predictor_hidden), predictor_activation=s.predictor_activation,
        sample_target=s.sample_target, stop_gradient_targets=s.stop_gradient_targets, reduction=s.reduction,
        vicreg_weight=s.vicreg_weight, vicreg_gamma=s.vicreg_gamma, vicreg_lambda_var=s.vicreg_lambda_var,
        vicreg_lambda_cov=s.vicreg_lambda_cov, vicreg_use_std=s.get("vicreg_use_std", False),
        contrastive_weight=s.contrastive_weight,
        temperature=s.temperature, learnable_temperature=s.learnable_temperature,
        stage=s.stage, targets=common.config_dict(s.get("targets")), head_inputs=MODALITIES,
        head_source=s.get("head_source", "latent"), head_hidden=tuple(s.head_hidden),
    )

