# The R `nlme` reference fit for examples/theophylline.py (run: Rscript examples/theophylline_nlme.R).
#
# Writes examples/data/theophylline.csv (R's datasets::Theoph as a NONMEM-format data set: one
# oral dose AMT = Dose [mg/kg] x Wt [kg] at TIME 0, then 11 concentrations [mg/L]) and
# examples/data/theophylline_nlme.csv (the maximum-likelihood estimates of nlme).
#
# The model is the one nlme_ppl's pk_oral_1cmt fits: a one-compartment model with first-order
# absorption, log-normal random effects on ka, CL and V with a diagonal covariance, additive error:
#   C(t) = AMT ka / (V (ka - CL/V)) (exp(-CL/V t) - exp(-ka t)),   y = C + eps,  eps ~ N(0, a^2).
library(nlme)
here <- tryCatch(dirname(sys.frame(1)$ofile), error = function(e) "examples")
if (!dir.exists(file.path(here, "data"))) here <- "examples"

d <- as.data.frame(Theoph)
d$ID <- as.integer(as.character(d$Subject))
d <- d[order(d$ID, d$Time), ]
d$AMT_MG <- d$Dose * d$Wt

# NONMEM layout: a pre-dose sample at TIME 0 comes before the dose record at TIME 0.
rows <- list()
for (id in sort(unique(d$ID))) {
  s <- d[d$ID == id, ]
  obs <- data.frame(ID = id, TIME = s$Time, DV = s$conc, AMT = 0, EVID = 0, MDV = 0, CMT = 2, WT = s$Wt, DOSE_MG_KG = s$Dose)
  dose <- data.frame(ID = id, TIME = 0, DV = 0, AMT = round(s$AMT_MG[1], 3), EVID = 1, MDV = 1, CMT = 1, WT = s$Wt[1], DOSE_MG_KG = s$Dose[1])
  first <- obs[obs$TIME == 0, ]
  rows[[length(rows) + 1]] <- rbind(first, dose, obs[obs$TIME > 0, ])
}
nm <- do.call(rbind, rows)
write.csv(nm, file.path(here, "data", "theophylline.csv"), row.names = FALSE, quote = FALSE)

d$amt <- d$AMT_MG
f1 <- function(amt, t, lka, lcl, lv) {
  ka <- exp(lka); ke <- exp(lcl - lv)
  amt * ka / (exp(lv) * (ka - ke)) * (exp(-ke * t) - exp(-ka * t))
}
fit <- nlme(conc ~ f1(amt, Time, lka, lcl, lv), data = d,
            fixed = lka + lcl + lv ~ 1, random = pdDiag(lka + lcl + lv ~ 1), groups = ~ ID,
            start = c(lka = 0.4, lcl = 1.0, lv = 3.5), method = "ML",
            control = nlmeControl(maxIter = 200, pnlsMaxIter = 50, msMaxIter = 200))
print(summary(fit))
fe <- fixef(fit)
sds <- as.numeric(VarCorr(fit)[1:3, "StdDev"])
out <- data.frame(
  parameter = c("mean[ka]", "mean[CL]", "mean[V]", "sd[ka]", "sd[CL]", "sd[V]", "sigma_add_sd", "loglik"),
  estimate = c(fe[["lka"]], fe[["lcl"]], fe[["lv"]], sds, fit$sigma, as.numeric(logLik(fit))),
  se = c(sqrt(diag(vcov(fit))), rep(NA, 5))
)
write.csv(out, file.path(here, "data", "theophylline_nlme.csv"), row.names = FALSE)
cat(sprintf("R %s, nlme %s\n", getRversion(), packageVersion("nlme")))
print(out)
