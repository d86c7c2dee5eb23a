"""Statistics without models: rates and their confidence intervals, ROC / AUC / TPR at FPR, empirical epsilon
bounds, the one-run DP audit bound, the privacy accountants and numerically stable scores."""
