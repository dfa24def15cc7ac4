// The peer's agent: a Restate service whose handler makes `steps` durable steps one after another
// (each `ctx.run` is journaled, and the handler goes on only once the server has it), as a keel
// run of `steps` steps writes each step's result before acting on it.
//   node service.mjs PORT
// Debian 12's Node.js (18) lacks Promise.withResolvers, which the SDK uses: supplied here first.
if (!Promise.withResolvers)
  Promise.withResolvers = () => {
    let resolve, reject;
    const promise = new Promise((y, n) => ((resolve = y), (reject = n)));
    return { promise, resolve, reject };
  };
const restate = await import("@restatedev/restate-sdk");

const agent = restate.service({
  name: "agent",
  handlers: {
    run: async (ctx, input) => {
      const steps = Number(input?.steps ?? 21);
      let last = null;
      for (let i = 0; i < steps; ++i) last = await ctx.run(`step ${i}`, async () => ({ step: i, out: "hello" }));
      return { steps, last };
    },
  },
});

restate.serve({ services: [agent], port: Number(process.argv[2]) });
