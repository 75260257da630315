"""DoLL labels: select classifiers, post-process their explanations, distil, boost, binarise, write.

The per-image algorithm is split into small pure functions (selection, postprocess, distil, boost,
binarise, targets) so each step can be checked against hand-computed numbers; ``runner`` strings
them together into the resumable, sharded labelling loop the bundle runs.
"""
