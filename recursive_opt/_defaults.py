"""The levels `Stack[d](opt)` puts above `opt`: towers that need no tuning.

Chosen by measurement over many tasks and twelve initial learning rates from 1e-5
to 1 (`benchmarks/tuning_free.py`, on one seed's batches; under other seeds the
worst of the twelve moves by up to 14x on some tasks, `--seeds`), and for
these reasons:

- The defaults are tuning-free for level-1 rules with momentum (Adam's b1 = 0.9,
  SGD's momentum = 0.9), not for rules without (SGD without momentum, RMSProp,
  AdaGrad, Adam with b1 = 0), whose learning rate falls all run long (median
  over 12 starts, digits MLP: 60-96x tuned Adam's loss and 1.2-4.1x the best of
  the rule's own grid; digits CNN: 83-345x and 1.2-13x). The one-step
  hypergradient g_t . u_{t-1} contains the last batch's noise passed through the
  curvature, a term that always says "lower" (the next step's loss does prefer a
  lower lr under noise: Wu et al. 2018). Level 2's Adam follows its sign, not
  its size, so it lowers the lr at full speed. A momentum of beta averages the
  step's noise over batches (variance x (1 - beta) / (1 + beta), 1/19 at 0.9),
  which makes that term small next to the signal (Adam with b1 = 0.5 lies
  between: digits 20x). Measured with `benchmarks/tuning_free.py --rules`. Use a
  rule with momentum; the one other hypergradient tried on RMSProp (real-time,
  without curvature: a decayed sum of past steps) carries the same term.
- Level 1 tunes its learning rate only (and whatever the user declared with
  `ro.hyper`). One-step hypergradients of momentum and second-moment decays move
  them fast and greedily: tuning them made every task worse.
- Level 1's learning rate is one per layer for adaptive rules (`per="layer"`,
  unless declared otherwise: the arrays one dict or module below the root hold
  share one, a dense layer's weights and bias, and so do those of a tuple in a
  list, the `(w, b)` of a `[(w, b), ...]` model; an array directly under the
  root is a layer of its own) and one per array for `SGD` (`per="leaf"`). The layers
  of a network differ in gradient scale and curvature, and one shared learning
  rate settles where the most sensitive layer allows, below what the others
  could take (the one-step hypergradient's greedy bias, per layer). Measured
  against one for the whole tree (then one per array): the regression MLP's
  median went from 2.4x to 0.6x of tuned Adam, digits from 0.95x to 0.78x, the
  char RNN from 1.08x to 0.99x; the least-squares and quadratic tasks (one leaf)
  are unchanged. For adaptive rules not one per array (the default until
  2026-12-05): a bias is a weight on a constant input, stepped by the same rule
  on the same layer's signal, and alone its one-step hypergradient sums over few
  coordinates, a noisy signal that raised the hidden biases' lrs of a tanh MLP
  on unnormalised targets to the ceiling while the weights' own signal cut
  theirs (medians 3.9x, 3.5x, 1.5x tuned Adam under three seeds against 1.4x,
  1.1x, 1.0x per layer). Over 31 tasks x 3 seeds per layer meets 154 of 186
  targets (per array 152), geometric means of the medians and the worst cases
  1.17x / 1.93x (1.19x / 1.90x); on the 13 tasks written later (`--tasks
  raw,fresh5,fresh6`, never used to choose) 59 of 78 (56), 1.13x / 1.61x (1.20x
  / 1.56x), on eight more (`fresh3,fresh4`) 48 of 48 (46), 0.66x / 1.11x (0.68x
  / 1.19x); on four written after this choice (`fresh7`: Equinox and Flax
  NNX models, a flow, bfloat16 parameters) 23 of 24 either way, 0.87x / 1.21x
  (0.79x / 1.16x). Against one lr for the model under the same ceiling, over
  the 100 tasks of `benchmarks/tuning_free.py` x 3 seeds (2026-12-07): 504 of
  600 targets against 496 (on the 48 written after this choice 243 against
  246), with large moves both ways (one lr for the model wins a
  Kolmogorov-Arnold network and a deep tanh MLP, loses the regression MLP,
  sparse parity, a conv autoencoder). Small margins: float rounding alone (the
  same arithmetic summed in another order) moved the 13 tasks' count by 3. An
  adaptive rule's step moves every coordinate by about its lr whatever its
  gradient's scale, so one lr is one step size for the layer; SGD's step is
  lr x gradient, and a bias's gradient is of another scale than its weights',
  so SGD keeps one lr per array (per layer its tower met 38 of 54 targets on
  the nine tasks x 3 seeds against 40, digits' medians 2.7-9.5x against
  2.3-7.7x). With a scheme other than `OneStep` (which carries a tangent or a
  window's derivative per tuned value) level 1 keeps one learning rate.
- Level 2 is Adam on the log learning rate: an Adam step does not depend on the
  hypergradient's scale, which changes by orders of magnitude between problems
  and during training, so one step size serves every problem. Its lr 0.1 moves
  level 1's lr by about 10 % a step (more while the hypergradients grow step
  after step, as Adam's second moment lags its first: up to 25 % on Rosenbrock's
  function, measured before the bound below, which caps a raise at 22 %): 5
  decades in about 115 steps, fast enough to correct any start in 1e-5..1 within
  a few hundred steps. At 0.01 (the reference's scale) a 1e-5 start does not
  reach a good lr in 400 steps.
- Level 2's momentum (b1) is 0.5 when level 1 is an adaptive rule (not `SGD`)
  and the scheme `OneStep`, 0.9 otherwise and at levels 3 and up. Momentum at
  level 2 is lag in a feedback loop: the one-step signal answers a change of lr
  at the next step, and a momentum of 0.9 keeps pushing for about ten steps
  more, so a climb from a low start overshoots (breast cancer from 2.8e-5: the
  lrs reach about 10 by step 75 and stall at 1-5, where the one-step signal has
  no drift to bring them down). Without momentum the climb is explosive (the
  log-lr hypergradient grows with the lr faster than Adam's second moment
  follows: a deep ReLU MLP's worst start 19x tuned Adam's loss) and over long
  runs the lr follows the one-step signal's greedy bias more closely (iris over
  1600 steps: 69x, against 19x). Half the momentum (an average over about two
  steps) lies between. Measured over 21 tasks x 3 seeds' batches x 12 starts
  (`benchmarks/tuning_free.py --seeds 1,2,3 --tasks all,heldout,fresh`): 104
  of 126 targets (median <= 1.5x, worst <= 3x tuned Adam) against 103 at 0.9,
  the geometric mean of the worst cases 1.63x against 1.80x (of the medians
  1.11x against 1.08x), the nine main tasks 52 of 54 against 48; over 1600
  steps equal or better on every task measured. Its price is a held-out matrix
  factorisation started near its saddle (medians about twice as high, 7.7-22x).
  The gain is in sample: on the tasks kept out of every choice it is a wash
  (held-out and fresh, 52 of 72 targets against 55; four later ones, 12 of 24
  either way; Rosenbrock's function 20x against 4.6e3x).
  Over SGD it is worse (88 of 126 against 86 at 0.9; a deep ReLU MLP's medians
  50-150x): SGD's step is not bounded per coordinate, so an overshooting lr does
  more harm there than a lagging one.
- In the same case (adaptive level 1, `OneStep`) every upper level bounds its
  raises of the lr below and not its cuts: its normalised step is clipped below
  at -2 (`Adam(clip=(-2.0, None))`), so level 2 raises a log-lr by at most 0.2 a
  step (level 3 by 0.02) and lowers it at Adam's full speed. Adam's normalised
  step m_hat / sqrt(v_hat) stays near 1 while the hypergradients keep their
  size, but after a quiet stretch (batch losses near 0, so hypergradients near
  0, and the second moment decays) the first hypergradients of a burst take
  steps of up to (1 - b1) / sqrt(1 - b2): 5 with level 2's b1 0.5 and b2 0.99,
  the lr x 1.65 in one step, then more in the next few. Traced on a
  bag-of-embeddings classifier whose batch losses are mostly 0 in float32: the
  lrs rose 11x in 6 steps with a loss spike, to where spikes come more often.
  The two directions are not alike: an lr raised too far blows the loss up
  before the one-step signal can answer, while one cut too far costs progress
  until the next raises, and on deterministic problems (Rosenbrock's function,
  full-batch digits) the lr must also come down fast. A symmetric bound at 2
  (the default of 2026-12-03) slowed those cuts: Rosenbrock's median 192x tuned
  Adam's loss against 19.7x unclipped, full-batch digits' worst 28x against
  0.15x. A bound of 2 keeps most steady climbs (the hypergradients grow step
  after step and the normalised step exceeds 1: up to 25 % a step, about 2.5,
  on Rosenbrock's function); a bound of 1 slowed them (digits from 1e-5 3.6x
  tuned Adam's loss, least squares 13.8x); a bound of 3 never binds on most
  climbs and tied the unclipped levels (steady climbs reach about 3 too). Over
  31 tasks x 3 seeds' batches x 12 starts (the 25 of `--seeds 1,2,3 --tasks
  all,heldout,fresh,fresh2` and the six probes): 151 of 186 targets (median <=
  1.5x, worst <= 3x tuned Adam) against 148 with the symmetric bound and 145
  unclipped; the 25 tasks 122 of 150 (120, 116), the probes 29 of 36 (28, 29).
  It is no cure: the bag-of-embeddings classifier stays the worst miss (medians
  38-144x), the matrix factorisation 4.8-16x, and the LayerNorm MLP's seed-3
  worst grew to 33x (19x symmetric, 6x unclipped). From lr 1e-3
  `Stack[3](Adam())` beats prodigy on 3, 5 and 3 of the 6 issue tasks under
  seeds 1, 2, 3, as with the symmetric bound (unclipped 5, 5, 3). Over SGD,
  whose level 2 has b1 0.9 (a bound of 1 on such bursts), the levels are
  unclipped as measured.
- In the same case level 2 gates its raises after its first 100 steps
  (`Adam(gate=(0.9, 100))`): a step that would raise the log-lr below is
  multiplied by r = min(1, s_hat^2 / v_hat), s a 10-step running mean of the
  hypergradient and v its second moment, so about 1 while the signal keeps one
  sign and about 0.05 where it is zero-mean noise; cuts keep full speed. The
  one-step signal is noisy (a cosine of -g_t and u_{t-1} with a standard
  deviation of about 0.4 a step against means of a few hundredths), and where
  it carries no drift Adam's normalised step still random-walks the lr by about
  level 2's lr a step, so after a few hundred steps an lr sits wherever its walk
  and the bursts took it (the bag-of-embeddings classifier's lrs wandered to
  5-10x a good one, breast cancer's to 1-5 from low starts). The first 100
  steps are about what level 2 needs to move an lr across the range 1e-5..1 at
  its speed: ungated, a climb from any start keeps its speed, and a cut that
  overshoots during the warm-up is made up. Gated from the first step, the
  climbs slowed (least squares from 1e-5 5.5x tuned Adam's loss, a 1-D conv
  net 3.6x, Rosenbrock's function 3.6e3x). Over 31 tasks x 3 seeds' batches x
  12 starts: 150 of 186 targets (ungated 151), the geometric means of the
  medians 1.17x (1.20x) and of the worst cases 2.00x (2.14x); the gain is
  where the lrs wandered (the bag-of-embeddings classifier's medians 8-23x,
  against 38-144x; a matrix factorisation 1.5-3.6x, against 4.8-16x; a
  LayerNorm MLP's worst 1.7-3.2x, against 9-33x), the price where a weak
  steady signal asked for a raise (Rosenbrock's function 78x, against 13x;
  digits' seed-3 worst 3.1x, against 2.6x). `Stack[3](Adam())`, then started
  at 1e-3, still beat prodigy on 3, 5 and 3 of the six issue tasks. Over
  1600 steps the gate leans the lrs down (cuts at full speed, noisy raises at
  a twentieth): breast cancer 1.15x tuned Adam's loss (0.79x ungated), digits'
  worst 1.30x (1.00x), and on iris, where the one-step signal balances at
  tuned Adam's own lr, the lrs fall 100-1000x and the loss stalls at 51x
  (32x ungated); the wide MLP of `--tasks fresh3` 4.6x (2.6x). Gates that
  lean neither way lose at 400 steps on the noisy tasks above (benchmarks/
  README.md, the tried table). Level 3 is not gated: it moves level 2's lr
  by at most 2 % a step.
- Since 2026-12-05 level 2 also tests its cuts after its first 100 steps
  (`Adam(gate=(0.9, 100, 1.0))`): a step that would lower the log-lr below is
  multiplied by min(1, t^2), t the size in standard errors of a 100-step
  running mean of the hypergradient (decay 0.99) where it says cut, else 0.
  Cuts at full speed let the one-step signal's noise and its greedy bias to
  low lrs (above) through as cuts while noisy raises pass at a twentieth: over
  long runs the lr leans down (iris above). With the test neither direction
  moves on noise, and a cut waits until a hundred steps' mean asks for it by
  one standard error (z = 1, not tuned: z = 2 was measured too, and loses
  more at 400 steps). Over 1600 steps, 33 tasks x 12 starts (seed 1's
  batches): 58 of 66 targets either way, geometric means of the medians 1.14x
  tuned Adam's loss against 1.22x and of the worst cases 1.48x against 1.88x
  (the adding-problem RNN 6.7x against 10.3x, the 1-D conv net 3.6x against
  5.5x, Rosenbrock's worst 36x against 4.6e4x; a residual MLP's worst 2.5x
  against 1.0x), `Stack[3](Adam())` below prodigy on 20 of 33 (18); on the
  six tasks where the lean showed (iris, the wide MLP, the GRU, digits,
  breast cancer, the regression MLP) x 3 seeds: 20 of 36 targets against 16,
  geometric means 1.94x / 5.01x against 3.50x / 9.57x (iris 42-45x against
  109-123x). Over 400 steps, 31 tasks x 3 seeds: 150 of 186 targets either
  way, geometric means 1.21x / 2.26x against 1.17x / 2.00x; the losses are
  single starts near the edge of stability, where the late signal is a weak
  steady cut and the long mean still carries the warm-up's larger raises
  (least squares' seed-3 worst 36.9x from lr 0.12: the lr held at 1.9 where
  the untested gate drifts it to 1.5; the test's t crosses 0 at step 360), and
  full-batch digits' seed-3 start at 0.12 (388x against 32x: the same blow-up
  at step 101 in both, lrs of 1.9 and 4.1 on its weights, from which the two
  recover differently). Training runs are mostly longer than 400 steps, so
  the test is the default.
- Since 2026-12-07 that test starts after level 2's 300th step, not its 100th
  (`Adam(gate=(0.9, 100, 1.0, 300))`); until then cuts pass at full speed. The
  test's mean (decay 0.99) is of every step from the first, and the warm-up's
  hypergradients are about steps the ramp held down: they ask for raises, so
  the lrs end the ramp high (0.7-1 on a CTC classifier whose tuned Adam lr is
  0.015) and the mean then refuses the cuts that would undo it. At step 300
  the warm-up's 100 steps make 9 % of the mean's weight (27 % at step 200), so
  the test from there on is of the steps after the ramp; before it the one-step
  signal's cuts undo the overshoot at full speed. 400 steps, 95 tasks x 3
  seeds' batches x 12 starts: 495 of 570 targets against 483; on the 86
  tasks written after the nine the defaults were first chosen on, 446 of 516
  against 430 (medians: a bag-of-embeddings classifier 0.6-9.8x tuned Adam's
  loss against 7.9-58x, a matrix factorisation 0.8-1.4x against 3.1-7.1x, a
  CTC classifier 1.4-1.7x against 3.1-3.3x, a recommender 1.0-1.3x against
  2.2-2.6x); on the nine, 49 of 54 against 53 (least squares' worst under
  seeds 2 and 3, digits' and breast cancer's under seed 3: there the signal
  after the warm-up is noise about an lr that was right, and free cuts cut
  it). Over 1600 steps (seed 1, 39 tasks) 67 of 78 targets against
  66 (the adding-problem RNN's worst 37x against 15x, breast cancer 1.18x
  against 0.91x), and the CTC classifier 1.3x against 5.7x; on the reference
  paper's protocol the medians at heights 2-4 read 3.1e-4, 4.3e-4, 4.8e-4
  against 3.0e-4, 3.7e-4, 3.7e-4 (the 2022 package's 8.0e-4, 5.5e-4,
  5.0e-4). `Stack[d](SGD(...))`'s level 2 has no gate, so it is unchanged.
- Since 2026-12-05 (evening) level 1's lr, in the same case and unless the
  user declared it (`ro.hyper`), is bounded above by 1, or by its start where
  that is higher (`bounds=(None, 1.0)`; `lr_ceiling`): the tower cuts it
  freely but never raises it past that. An adaptive step moves each coordinate
  by about its lr, so 1 is a step the size of a typical parameter, and it is
  the top of the range a start is corrected from. Above it the lr got there by
  the one-step signal alone, which cannot see what lies past the next step:
  where the towers went above 1 it was to an edge of stability (least squares'
  lr at 1.9-3.3 from starts of 0.12-0.35: worst 7.3x and 37x tuned Adam's loss;
  full-batch digits' weights at 1.9 and 4.1 before a blow-up: 388x) or into
  saturated units (a tanh network's lrs at 2.5-6.8 on unnormalised targets).
  The bound is on the lr before the warm-up's factor, so during the warm-up
  it also caps the step taken at the factor (the reported lrs that rose above
  1 to make up for the ramp now stop at 1; a bound on the step taken was not
  measured). Over 400 steps, 31 tasks x 3 seeds x 12 starts: 152 of 186
  targets against 150, geometric means of the medians 1.19x tuned Adam's
  loss against 1.21x and of the worst cases 1.90x against 2.26x (least
  squares' worst 1.2-1.9x against 2.9-37x, full-batch digits' seed-3 47x
  against 388x, the bag-of-embeddings classifier's medians 8-58x against
  24-256x); `Stack[3](Adam())` below prodigy on 67 of 93 task-seeds (69).
  The price is the matrix factorisation from near its saddle, whose lrs,
  stopped at 1 on the climb, settle lower afterwards (medians 3.1-7.1x
  against 1.5-3.8x). On the twelve tasks of `--tasks fresh3,fresh4,fresh5`,
  three seeds: 63 of 72 either way, geometric means 0.91x / 1.44x against
  0.90x / 1.52x; on four written after the ceiling (`--tasks fresh6`, three
  seeds) 22 of 24 against 18 at 400 steps and 24 of 24 against 18 over 1600
  (a REINFORCE bandit's output-layer lr, raised past 1 without it: medians
  1.8-2.6x, against 1.2-1.6x). Over 1600 steps,
  39 tasks, seed 1: 66 of 78 targets against 65, geometric means 1.18x / 1.44x
  against 1.18x / 1.69x (Rosenbrock's worst 1.0x against 36x, the adding RNN's
  15x against 36x, iris's 40x against 137x; digits on batches of 4 2.0x
  against 1.6x). It does not cure saturation: tanh networks on unnormalised
  targets (`--tasks raw`: diabetes' raw targets, 1.5-3.9x tuned Adam's loss;
  the two heads of `--tasks fresh5`) saturate with lrs below 1 too. A bound
  of 0.1 holds most of them (6 probes x 3 seeds: 30 of 36 targets against 21;
  the two heads 0.14-0.22x) but costs wherever an lr above 0.1 is needed
  (least squares 24x, digits' worst 28x, the CNN 2-4x; 141 of 186 targets):
  an absolute bound cannot serve both.
- b2 = 0.99 at the upper levels: hypergradients shrink by orders of magnitude as
  training converges, and a shorter second-moment memory than Adam's usual 0.999
  follows them. Measured: about neutral against 0.999, better than 0.9 or 0.95
  (noisier, one run blew up at 0.9).
- Adam's lr not given (`Stack[d](ro.Adam())`) starts at 1e-2, not at Adam's
  own default 1e-3 (in the same case: an adaptive rule under `OneStep`). 1e-2
  is already the default lr of SGD, RMSProp and AdaGrad. A tower's cuts are
  unbounded and its raises bounded (at most 22 % a step), and the warm-up takes
  the first step at a hundredth of the start, so a start on the high side costs
  a few fast cuts while a low one costs a slow climb. Over 31 tasks x 3 seeds'
  batches (93 task-seeds, 400 steps), the ratio of the default tower's final
  loss to tuned Adam's falls as the start rises through the range (geometric
  mean 1.53x from 1e-5, 1.23x from 6.6e-4, 1.11x from 1.9e-3, 0.81-0.95x from
  1.5e-2 to 4.3e-2, 0.86-1.05x above). From 1e-2 against 1e-3: geometric mean
  1.03x (1.20x), 5 of the 93 above 3x (7), below prodigy's loss on 72 (67); on
  the six issue tasks 6, 6 and 3 under seeds 1, 2, 3 (3, 5 and 3), and every
  start of the grid from 5.3e-3 to 4.3e-2 wins at least 4 of the six with seed
  1 (`benchmarks/tuning_free.py --seeds 1,2,3 --tasks
  all,heldout,probes,fresh,fresh2 --row "Stack[3](Adam(lr))"`). Explicit lrs,
  `Stack(...)` and tied towers keep what they are given.
- Levels 3 and above are Adam(0.01) on the log learning rate of the level below:
  they slowly adapt how fast level 2 moves (faster while its hypergradient keeps
  one sign, slower while it flips). A fast top level (0.03-0.1) was noisier.
- A warm-up of level 1's step over its first 100 steps (the step is multiplied
  by a factor from 1/100 at the first step to 1 at the 100th; the hypergradients
  see the step actually taken). The first steps are taken before any
  hypergradient exists, so a bad initial lr does its damage unopposed: one Adam
  step at lr 1 moves every weight by 1, which a tanh network does not recover
  from in hundreds of steps. With the warm-up the first step of a start at the
  top of the range (lr 1) is 1e-2, a safe Adam step, and the tower measures and
  corrects the lr while the ramp rises. Adam's own early steps also benefit from
  a warm-up (its second-moment estimate is unreliable at first: Liu et al.
  2020, RAdam). Measured against none: it made no task's worst case worse and
  lifted the lrs the towers settle at (less of the one-step bias); one median
  rose (breast cancer, 1.16x -> 1.28x of tuned Adam; `benchmarks/tuning_free.py`,
  "no warm-up" row). Under the later levels (gate, cut test, ceiling) the lift
  matters more: while the ramp holds the step down the one-step signal asks for
  a larger one and level 2 raises the lr, which the cut test then keeps.
  Without the warm-up the nine tasks meet 27 of 54 targets instead of 53 (three
  seeds; least squares 10-13x tuned Adam's loss from every start, against
  1.00x), and a warm-up that caps the lr instead of scaling the step leaves
  least squares' lrs at the one-step optimum (0.05-0.12 against 0.57-0.87).
  The same lift is the overshoot of the CTC classifier and phase retrieval
  (benchmarks/README.md, "The warm-up is what lifts the lrs").
- The factor rises geometrically (by the same ratio each step, 100^(1/100), 4.6 %
  in log terms), not linearly. Level 2 moves the log-lr by about 0.1 a step, so
  it can always hold the step down against this ramp. A linear ramp rises by
  log((t+2)/(t+1)) at step t: tenfold in its first ten steps, faster than level 2
  can respond, and a start at lr 1 took steps of up to 0.1 at step 10 before the
  tower could cut them; the geometric ramp's factor there is 0.017. Measured over the 21
  tasks of `benchmarks/tuning_free.py` and three seeds' batches (63 task-seeds):
  the worst cases fell from 14-150x to 1.0-2.3x on a deep ReLU MLP and from 21x
  to 2.2x on the CNN (both from lr 1), from 5.5x to 1.9x on digits and from
  3.7-7.3x to 2.7-3.5x on least squares (from 1e-5); the 400-step targets met rose
  from 98 to 103 of 126 (geometric mean of the worst cases 2.13x -> 1.80x). The
  price is paid by low starts on breast cancer (median 1.24-1.71x -> 1.73-2.33x,
  worst up to 4.7x) and on the LayerNorm MLP (worst 5.3-8.4x -> 16-21x on two
  seeds, 23x -> 7.4x on the third): the ramp holds the step down for longer (a
  tenth of the lr at step 50, against a half), the tower raises the lrs to make
  up for it, and from a low start they overshoot further (breast cancer from
  2.8e-5: 1.3 and 5.8 at step 150, against 2.8 and 2.0) before level 2 stalls.
- 300 steps instead of 100 when level 1 is SGD, and linear. SGD's step is not
  bounded per coordinate as an adaptive step is (an Adam step moves each weight
  by at most about its lr): it is lr times the gradient, times 1/(1 - momentum) once a
  momentum buffer has built up, so a start far above a good lr blows up within
  a few full steps, and the lrs, which rise while the ramp holds the step down,
  must be measured over a longer ramp before full steps are taken. With 100
  steps the SGD-momentum tower started at lr 1 diverged on a small transformer;
  with 300 it does not, and it ends better on most tasks (digits 9.6x -> 4.3x of
  tuned Adam, least squares 14x -> 4.4x, the CNN's worst 4.0x -> 2.2x), worse on
  breast cancer (worst 1.8x -> 3.2x). For Adam, 300 steps made a start at lr 1
  on the CNN 20x worse and breast cancer's median 1.7x, so Adam keeps 100. The
  geometric ramp over 300 steps (from 1/300, rising 1.9 % a step) is worse for
  SGD: the lrs, raised while the slow ramp holds the step down, blow up when it
  ends (seed 1's batches: the CNN's worst 15x -> 50x, breast cancer's 3.2x ->
  8.1x; the other tasks about as before). With
  another scheme SGD keeps 100 too: the lrs rise while the ramp holds the step
  down, and a real-time hypergradient carries that rise in its tangent (on the
  noisy quadratic of `benchmarks/schemes.py`, RealTime(0.9) from 1e-3 ended at
  9x the best fixed lr with 300 steps).
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp

from ._hyper import TRANSFORMS, fixed, hyper_fields
from ._optimiser import AbstractOptimiser
from ._optimisers.adam import Adam

LEVEL2_LR = 0.1
HIGHER_LR = 0.01
TOWER_LR = 1e-2  # where `Stack[d](opt)` starts an lr the user did not give
LR_CEILING = 1.0  # above which `Stack[d](opt)` raises no adaptive level 1's lr
UPPER_B1 = 0.9
LEVEL2_B1 = 0.5  # over an adaptive level 1 with `OneStep`
UPPER_CLIP = (-2.0, None)  # each upper level's normalised step, in that case:
# raises of the lr below bounded, cuts free
LEVEL2_GATE = (0.9, 100, 1.0, 300)  # level 2, in that case: after its 100th step
# raises as sure as a 10-step mean, after its 300th cuts as a 100-step mean's
# test (one standard error)
WARMUP = 100
SGD_WARMUP = 300
WARMUP_SHAPES = ("geometric", "linear")
WARMUP_SHAPE = "linear"  # of `Stack(...)` given a `warmup=`


def adaptive_one_step(opt: AbstractOptimiser, one_step: bool) -> bool:
    """Level 1 is an adaptive rule (`opt.adaptive`: not `SGD`, whose step is not
    bounded per coordinate) under `OneStep`: the case that takes the geometric
    warm-up and level 2's momentum of 0.5."""
    return one_step and opt.adaptive


def default_warmup(opt: AbstractOptimiser, depth: int, one_step: bool = True) -> int:
    """The warm-up (steps) of `Stack[depth](opt)`: none for one level, longer for
    SGD and other rules that are not adaptive (`opt.adaptive`: their step is not
    bounded per coordinate) than for adaptive rules, with the one-step scheme
    (`one_step`) it was measured with."""
    if depth == 1:
        return 0
    return SGD_WARMUP if not opt.adaptive and one_step else WARMUP


def default_warmup_shape(opt: AbstractOptimiser, one_step: bool = True) -> str:
    """The warm-up's shape in `Stack[d](opt)`: geometric for adaptive rules under
    `OneStep` (a ramp the tower can always outpace), linear for SGD (whose lr,
    raised while a slow ramp holds the step down, blows up when it ends) and for
    the other schemes (measured with it)."""
    return "geometric" if adaptive_one_step(opt, one_step) else "linear"


def upper_level(level: int, adaptive: bool = False) -> Adam:
    """The default optimiser at `level` (>= 2) of `Stack[d](opt)`; `adaptive`:
    level 1 is an adaptive rule (not `SGD`) under `OneStep`, where level 2 takes
    a momentum of 0.5 instead of 0.9 and, after its first 100 steps, gates its
    raises of the lr below by the signal's certainty and, after its first 300,
    its cuts by a test of a 100-step mean, and every upper level's raises
    are bounded (its normalised step clipped below at -2)."""
    lr = LEVEL2_LR if level == 2 else HIGHER_LR
    b1 = LEVEL2_B1 if level == 2 and adaptive else UPPER_B1
    clip = UPPER_CLIP if adaptive else None
    gate = LEVEL2_GATE if level == 2 and adaptive else None
    return Adam(lr, b1=fixed(b1), b2=fixed(0.99), clip=clip, gate=gate)


def learning_rate_only(opt: AbstractOptimiser, per: str | None) -> AbstractOptimiser:
    """`opt` with its undeclared tuned hyperparameters other than `lr` fixed, and
    (with `per`, `"layer"` or `"leaf"`) an undeclared `lr` one per layer or per
    array."""
    fields = hyper_fields(opt)
    names = [n for n, h in fields.items() if n != "lr" and h.tune and not h.declared]
    new = [dataclasses.replace(fields[n], tune=False) for n in names]
    lr = fields.get("lr")
    if per and lr is not None and lr.tune and not lr.declared and lr.per == "tree":
        names.append("lr")
        new.append(dataclasses.replace(lr, per=per))
    if not names:
        return opt
    return eqx.tree_at(lambda o: [getattr(o, n) for n in names], opt, new)


def default_levels(
    opt: AbstractOptimiser, depth: int, one_step: bool = True
) -> tuple[AbstractOptimiser, ...]:
    """The levels of an untied `Stack[depth](opt)`, bottom first, with the scheme
    `OneStep` (`one_step`) or another."""
    if depth == 1:
        return (opt,)
    adaptive = adaptive_one_step(opt, one_step)
    per = ("layer" if adaptive else "leaf") if one_step else None
    level1 = learning_rate_only(opt, per)
    if adaptive:
        level1 = lr_ceiling(tower_start(level1))
    return (level1, *(upper_level(k, adaptive) for k in range(2, depth + 1)))


def tower_start(opt: AbstractOptimiser) -> AbstractOptimiser:
    """`opt` with a learning rate the user did not give (`Adam()`'s) started at
    `TOWER_LR`."""
    lr = hyper_fields(opt).get("lr")
    if lr is None or lr.given:
        return opt
    raw = jnp.full_like(lr.raw, TRANSFORMS[lr.transform].inverse(TOWER_LR))
    return eqx.tree_at(lambda o: o.lr.raw, opt, raw)


def lr_ceiling(opt: AbstractOptimiser) -> AbstractOptimiser:
    """`opt` with an undeclared, tuned, unbounded lr bounded above by
    `LR_CEILING`, or by its start where that is higher (a start the tower
    cannot read, a traced one, is bounded by `LR_CEILING`)."""
    lr = hyper_fields(opt).get("lr")
    if lr is None or not lr.tune or lr.declared or lr.bounds is not None:
        return opt
    high = LR_CEILING
    if not any(isinstance(r, jax.core.Tracer) for r in jax.tree.leaves(lr.raw)):
        start = max(float(jnp.max(v)) for v in jax.tree.leaves(lr.value))
        high = max(high, start)
    bounded = dataclasses.replace(lr, bounds=(None, high))
    return eqx.tree_at(lambda o: o.lr, opt, bounded)
