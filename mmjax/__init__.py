"""mmjax: multimodal representation learning for materials in JAX/Flax.

Layout (see DESIGN in the project notes):
  mmjax.data        sources -> Material -> featurisers -> store -> grain pipeline -> Batch
  mmjax.features    public numpy featurisers (re-exported from mmjax.data.features)
  mmjax.nn          Flax Linen encoders, fusion and heads (pure array code)
  mmjax.objectives  jit-able, shardable loss functions (pure array code)
  mmjax.systems     X-MoPA, XxaCT-NN, MultiMat, MatBind, baselines
  mmjax.train       optimiser, train step, loop, checkpoints, mesh
  mmjax.eval        probes, retrieval, discovery, latent analysis
"""

__version__ = "0.1.0"
