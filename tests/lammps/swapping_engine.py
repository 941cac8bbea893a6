"""A test engine that plays the refit server: on rank 0 it writes a new parameter version to the
watched file at every check step, then records the version each rank uses at each step."""
from pylal.lammps.engine import Engine
from pylal.model.params import Parameters


class SwappingEngine(Engine):
    def evaluate(self, step, *args, **kwargs):
        if self.rank == 0 and self.is_check_step(step) and step > 0 and step > getattr(self, "_written", -1):
            self._written = step
            p = self.params
            Parameters(p.spec, p.mean * 1.001, p.committee * 1.001, p.noise_precision,
                       version=p.version + 1).save(self.settings.watch)
        buffer = super().evaluate(step, *args, **kwargs)
        with open(f"versions_{self.rank}.txt", "a") as log:
            log.write(f"{step} {self.params.version}\n")
        return buffer
