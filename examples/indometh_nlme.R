# The R `nlme` reference fit for examples/indometh.py (run: Rscript examples/indometh_nlme.R).
#
# Writes examples/data/indometh.csv (R's datasets::Indometh: 6 subjects, 11 plasma
# concentrations [mcg/mL] each over 8 h after an intravenous bolus of indomethacin; a plain long
# table ID, TIME, DV) and examples/data/indometh_nlme.csv (the maximum-likelihood estimates).
#
# The model is the one examples/indometh.py writes in NumPyro: a biexponential on the log scale,
#   C(t) = exp(lA1) exp(-exp(lrc1) t) + exp(lA2) exp(-exp(lrc2) t),   y = C + eps,  eps ~ N(0, sigma^2),
# with log-normal random effects on A1 and A2 (diagonal covariance); the rate constants lrc1 and
# lrc2 and the error SD sigma have no random effect. (With a random effect on lrc1 too, nlme's
# ML estimate of its SD is 1e-4 and the log-likelihood is unchanged to 1e-3: the data carry no
# between-subject variability of lrc1.)
library(nlme)
here <- tryCatch(dirname(sys.frame(1)$ofile), error = function(e) "examples")
if (!dir.exists(file.path(here, "data"))) here <- "examples"

d <- as.data.frame(Indometh)
d$ID <- as.integer(as.character(d$Subject))
d <- d[order(d$ID, d$time), ]
write.csv(data.frame(ID = d$ID, TIME = d$time, DV = d$conc), file.path(here, "data", "indometh.csv"),
          row.names = FALSE, quote = FALSE)

f <- function(t, lA1, lrc1, lA2, lrc2) exp(lA1) * exp(-exp(lrc1) * t) + exp(lA2) * exp(-exp(lrc2) * t)
fit <- nlme(conc ~ f(time, lA1, lrc1, lA2, lrc2), data = d,
            fixed = lA1 + lrc1 + lA2 + lrc2 ~ 1, random = pdDiag(lA1 + lA2 ~ 1), groups = ~ ID,
            start = c(lA1 = 1, lrc1 = 0.8, lA2 = -0.8, lrc2 = -1.3), method = "ML")
print(summary(fit))
fe <- fixef(fit)
sds <- as.numeric(VarCorr(fit)[1:2, "StdDev"])
out <- data.frame(
  parameter = c("mean[lA1]", "mean[lrc1]", "mean[lA2]", "mean[lrc2]", "sd[lA1]", "sd[lA2]", "sigma", "loglik"),
  estimate = c(fe[["lA1"]], fe[["lrc1"]], fe[["lA2"]], fe[["lrc2"]], sds, fit$sigma, as.numeric(logLik(fit))),
  se = c(sqrt(diag(vcov(fit))), rep(NA, 4))
)
write.csv(out, file.path(here, "data", "indometh_nlme.csv"), row.names = FALSE)
cat(sprintf("R %s, nlme %s\n", getRversion(), packageVersion("nlme")))
print(out)
