// The peer's agent: a Restate service whose handler makes `steps` durable steps one after another
// (each `ctx.run` is journaled, and the handler goes on only once the server has it), as a keel
// run of `steps` steps writes each step's result before acting on it.
//   node service.mjs PORT
import * as restate from "@restatedev/restate-sdk";

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
