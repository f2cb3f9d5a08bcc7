"""Object detection: R-CNN, Fast R-CNN, Faster R-CNN and OverFeat on the zoo's backbones (issue 17)."""
