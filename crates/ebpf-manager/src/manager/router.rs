//! Routers: programs into program arrays (tail calls) and maps into maps of maps, at `start`
//! before probes attach, and at runtime.

use super::table::ObjectKey;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};

use aya::maps::{ArrayOfMaps, HashOfMaps, Map, MapFd, ProgramArray};

use super::{Manager, ManagerState, State};
use crate::{kernel::bpf_map, Error, MapRoute, ProbeIdentificationPair, Result, TailCallRoute};

/// One slot a route wrote, and what it held before, so that a failed call puts it back.
struct RouteUndo {
    map: OwnedFd,
    key: u32,
    /// The previous occupant (program or map), `None` for an empty slot, `Err` when the
    /// kernel would not tell (the slot is then left as the route wrote it).
    previous: std::result::Result<Option<OwnedFd>, String>,
}

impl RouteUndo {
    fn record(map: BorrowedFd<'_>, key: u32, program: bool) -> std::io::Result<Self> {
        let previous = match bpf_map::fd_slot_id(map, key) {
            Ok(None) => Ok(None),
            Ok(Some(id)) => bpf_map::fd_by_id(program, id)
                .map(Some)
                .map_err(|e| format!("reopening id {id}: {}", crate::error::chain(&e))),
            Err(e) => Err(format!("lookup: {}", crate::error::chain(&e))),
        };
        Ok(Self {
            map: map.try_clone_to_owned()?,
            key,
            previous,
        })
    }

    fn undo(self) {
        let done = match &self.previous {
            Ok(None) => bpf_map::clear_slot(self.map.as_fd(), self.key),
            Ok(Some(fd)) => bpf_map::set_fd_slot(self.map.as_fd(), self.key, fd.as_fd()),
            Err(why) => {
                log::warn!("route slot {} left as written: {why}", self.key);
                return;
            }
        };
        if let Err(e) = done {
            log::warn!(
                "restoring route slot {}: {}",
                self.key,
                crate::error::chain(&e)
            );
        }
    }
}

/// The slots a call's routes wrote, in order; [`undo`](Self::undo) restores them.
#[derive(Default)]
pub(super) struct AppliedRoutes(Vec<RouteUndo>);

impl AppliedRoutes {
    /// Puts every slot back as it was, last written first.
    pub(super) fn undo(self) {
        for slot in self.0.into_iter().rev() {
            slot.undo();
        }
    }
}

fn route_error(route: String, reason: impl std::fmt::Display) -> Error {
    Error::InvalidOption {
        option: route,
        reason: reason.to_string(),
    }
}

/// A second fd of `map`, opened by its id: aya keeps its own fds private.
fn reopen(map: &Map) -> std::result::Result<MapFd, aya::maps::MapError> {
    super::dump::data(map).info().and_then(|info| info.fd())
}

impl State {
    /// A new fd of a found program as aya loaded it (a tail-call slot or another manager's
    /// route takes aya's `ProgramFd`). A kprobe.multi or uprobe.multi probe's program is the
    /// manager's own load; aya's copy is loaded for this.
    fn aya_program_fd(
        &mut self,
        found: &super::access::Found,
    ) -> std::result::Result<aya::programs::ProgramFd, String> {
        let (object, function) = self.located(found);
        let function = function.to_owned();
        let prog = self
            .objects
            .get_mut(object)
            .and_then(|o| o.program_mut(&function))
            .ok_or_else(|| format!("the object has no program `{function}`"))?;
        if !crate::loader::is_loaded(prog) {
            let id = ProbeIdentificationPair::new("", function.clone());
            if let Err(e) = crate::loader::load_program(prog, &id, &function, None, &mut self.btf) {
                self.load_failed(object, &function, &id, e)
                    .map_err(|e| e.report().to_string())?;
            }
        }
        let prog = self
            .objects
            .get_mut(object)
            .and_then(|o| o.program_mut(&function))
            .ok_or_else(|| format!("the object has no program `{function}`"))?;
        prog.fd()
            .map_err(|e| format!("`{function}` is not loaded: {}", crate::error::chain(&e)))?
            .try_clone()
            .map_err(|e| crate::error::chain(&e))
    }

    /// Writes every route into its map; if one fails, the slots already written are put back
    /// as they were.
    pub(super) fn apply_routes(
        &mut self,
        tail_calls: &[TailCallRoute],
        maps: &[MapRoute],
    ) -> Result<AppliedRoutes> {
        let mut applied = AppliedRoutes::default();
        let result = (|| {
            for route in tail_calls {
                applied.0.push(self.route_tail_call(route)?);
            }
            for route in maps {
                applied.0.push(self.route_map(route)?);
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(applied),
            Err(e) => {
                applied.undo();
                Err(e)
            }
        }
    }

    fn route_tail_call(&mut self, route: &TailCallRoute) -> Result<RouteUndo> {
        crate::fault::check("route")?;
        let name = format!("tail call route {}[{}]", route.prog_array_name, route.key);
        let id = &route.probe_identification_pair;
        // Another manager's program, or the one the pair names (as Go's getProgram finds it),
        // loaded when needed.
        let own;
        let fd = match &route.program {
            Some(fd) => fd.as_ref(),
            None => {
                let found = self.load_by_name(id).map_err(|e| match e {
                    Error::ProbeNotFound { .. } => route_error(
                        name.clone(),
                        format!("the object has no program `{}`", id.ebpf_func_name),
                    ),
                    other => other,
                })?;
                own = self
                    .aya_program_fd(&found)
                    .map_err(|e| route_error(name.clone(), e))?;
                &own
            }
        };
        let ebpf = self
            .objects
            .get_mut(ObjectKey::MAIN)
            .expect("the main object lives until stop");
        let map = ebpf.map_mut(&route.prog_array_name).ok_or_else(|| {
            route_error(
                name.clone(),
                format!("the object has no map `{}`", route.prog_array_name),
            )
        })?;
        let undo = RouteUndo::record(super::dump::data(map).fd().as_fd(), route.key, true)
            .map_err(|e| route_error(name.clone(), crate::error::chain(&e)))?;
        let mut array = ProgramArray::try_from(map).map_err(|e| {
            route_error(
                name.clone(),
                format!("not a program array: {}", crate::error::chain(&e)),
            )
        })?;
        array
            .set(route.key, fd, 0)
            .map_err(|e| route_error(name, crate::error::chain(&e)))?;
        Ok(undo)
    }

    fn route_map(&mut self, route: &MapRoute) -> Result<RouteUndo> {
        crate::fault::check("route")?;
        let name = format!("map route {}[{}]", route.routing_map_name, route.key);
        let ebpf = self
            .objects
            .get_mut(ObjectKey::MAIN)
            .expect("the main object lives until stop");
        let missing =
            |map: &str| route_error(name.clone(), format!("the object has no map `{map}`"));
        let own = match &route.map {
            Some(_) => None,
            None => {
                let inner = ebpf
                    .map(&route.map_name)
                    .ok_or_else(|| missing(&route.map_name))?;
                Some(
                    reopen(inner)
                        .map_err(|e| route_error(name.clone(), crate::error::chain(&e)))?,
                )
            }
        };
        let inner_fd: &MapFd = route
            .map
            .as_deref()
            .or(own.as_ref())
            .expect("one of the two is set");
        let outer = ebpf
            .map_mut(&route.routing_map_name)
            .ok_or_else(|| missing(&route.routing_map_name))?;
        let undo = matches!(outer, Map::ArrayOfMaps(_) | Map::HashOfMaps(_))
            .then(|| RouteUndo::record(super::dump::data(outer).fd().as_fd(), route.key, false))
            .transpose()
            .map_err(|e| route_error(name.clone(), crate::error::chain(&e)))?;
        let result = match outer {
            Map::ArrayOfMaps(_) => ArrayOfMaps::<_, MapFd>::try_from(outer)
                .and_then(|mut m| m.set(route.key, inner_fd, 0)),
            Map::HashOfMaps(_) => HashOfMaps::<_, u32, MapFd>::try_from(outer)
                .and_then(|mut m| m.insert(route.key, inner_fd, 0)),
            _ => {
                return Err(route_error(
                    name,
                    format!("`{}` is not a map of maps", route.routing_map_name),
                ))
            }
        };
        result.map_err(|e| route_error(name.clone(), crate::error::chain(&e)))?;
        undo.ok_or_else(|| route_error(name, "not a map of maps"))
    }
}

impl Manager {
    /// A new fd of the map `name` of the object, opened by its id: it keeps the map alive after
    /// this manager stops, and routes it into another manager's map of maps
    /// ([`MapRoute::map`]).
    pub fn map_fd(&self, name: &str) -> Result<MapFd> {
        let main = self.state.objects.get(ObjectKey::MAIN);
        let failed = |reason: String| Error::InvalidOption {
            option: format!("map_fd({name})"),
            reason,
        };
        if let Some(map) = main.and_then(|ebpf| ebpf.map(name)) {
            return reopen(map).map_err(|e| failed(crate::error::chain(&e)));
        }
        // A map a reader took out of the object is still the object's map; struct_ops maps
        // are the manager's own.
        let held = self
            .state
            .main_map_fds
            .get(name)
            .or_else(|| {
                self.state
                    .struct_ops
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| &s.map)
            })
            .ok_or_else(|| Error::MapNotFound {
                map: name.to_owned(),
                kind: "map",
                available: main.map(crate::maps::map_names).unwrap_or_default(),
            })?;
        let owned = held
            .try_clone()
            .map_err(|e| failed(crate::error::chain(&e)))?;
        aya::maps::MapData::from_fd(owned)
            .and_then(|data| data.info())
            .and_then(|info| info.fd())
            .map_err(|e| failed(crate::error::chain(&e)))
    }

    /// A new fd of the program `id` names (a probe's, or with an empty uid one no probe
    /// declares, as [`get_program`](Self::get_program) finds it), loaded on this first request
    /// if needed, for another manager's [`TailCallRoute::program`]; it keeps the program
    /// alive after this manager stops.
    pub fn program_fd(&mut self, id: &ProbeIdentificationPair) -> Result<aya::programs::ProgramFd> {
        self.load_program(id)?;
        let found = self
            .state
            .find_program(id)
            .ok_or_else(|| Error::ProbeNotFound { id: id.clone() })?;
        self.state
            .aya_program_fd(&found)
            .map_err(|reason| Error::InvalidOption {
                option: format!("program_fd({id})"),
                reason,
            })
    }

    /// Writes more tail-call routes (on an initialized or running manager).
    pub fn update_tail_call_routes(&mut self, routes: &[TailCallRoute]) -> Result<()> {
        self.expect(
            "update the tail call routes of",
            &[
                ManagerState::Initialized,
                ManagerState::Running,
                ManagerState::Paused,
            ],
        )?;
        self.state.apply_routes(routes, &[]).map(drop)
    }

    /// Writes more map routes (on an initialized or running manager).
    pub fn update_map_routes(&mut self, routes: &[MapRoute]) -> Result<()> {
        self.expect(
            "update the map routes of",
            &[
                ManagerState::Initialized,
                ManagerState::Running,
                ManagerState::Paused,
            ],
        )?;
        self.state.apply_routes(&[], routes).map(drop)
    }
}
