"""The shipped recipes, big_vision style: each module's `get_config(arg=None)`
returns the run's fields as a ConfigDict (`keras_ccmim.training.config.recipe`).
`ccmim-pretrain --config=<name>` loads one by name from any directory;
`keras_ccmim.training.load_recipe("<name>")` does the same in Python.

    demo                      the README's main job (ViT-T/4, synthetic_objects)
    cifar10_vit_tiny          the CIFAR-10 study's ccMIM pretraining
    imagenet_vit_base_ccmim   the paper's ImageNet-1K run (`:runlocal`: a CPU smoke run)
    mae_baseline              the same with random masking and no contrastive loss
"""
